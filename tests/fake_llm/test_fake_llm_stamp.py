"""The ``stamp`` directive: streamed content tokens carry the Unix time they were written."""

from __future__ import annotations

import time
from typing import Any

import openai

from fake_llm.directives import FaultBudget, parse_directives


def say(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def stream_chunks(client: openai.AsyncOpenAI, text: str) -> list[Any]:
    stream = await client.chat.completions.create(
        model="tgi", messages=say(text), stream=True, stream_options={"include_usage": True}
    )
    return [chunk async for chunk in stream]


def deltas(chunks: list[Any], field: str) -> list[str]:
    """The non-empty ``content``/``reasoning_content`` deltas of a stream, in order."""
    out = []
    for chunk in chunks:
        if chunk.choices:
            value = getattr(chunk.choices[0].delta, field, None)  # reasoning_content is an extra
            if value:
                out.append(value)
    return out


def test_stamp_directive_parses_and_survives_the_fault_budget() -> None:
    assert parse_directives(["hi"]).stamp is False
    directives = parse_directives(["[[arkq:stamp=1 tokens=50 itl_ms=20 status=503 times=1]]"])
    assert (directives.stamp, directives.tokens, directives.itl_ms) == (True, 50, 20.0)
    assert parse_directives(["[[arkq:stamp=1]] [[arkq:stamp=0]]"]).stamp is False
    assert directives.without_faults().stamp is True
    budget = FaultBudget()
    assert budget.apply(directives).status == 503
    after = budget.apply(directives)
    assert (after.status, after.stamp) == (None, True)


async def test_stamped_stream_carries_send_times_and_keeps_counts(client: openai.AsyncOpenAI) -> None:
    plain = await stream_chunks(client, "Tell me about the sea. [[arkq:tokens=20 reasoning=3]]")
    started = time.time()
    stamped = await stream_chunks(client, "Tell me about the sea. [[arkq:tokens=20 reasoning=3 stamp=1]]")
    ended = time.time()

    assert len(stamped) == len(plain)
    assert stamped[-1].usage == plain[-1].usage
    assert stamped[-1].usage.completion_tokens == 23
    reasoning = deltas(stamped, "reasoning_content")
    assert reasoning == deltas(plain, "reasoning_content") and len(reasoning) == 3
    texts = deltas(stamped, "content")
    assert len(texts) == len(deltas(plain, "content")) == 20
    assert all(text.startswith(" ") and len(text.split(".")[1]) == 6 for text in texts)
    stamps = [float(text) for text in texts]
    assert stamps == sorted(stamps)
    assert started <= stamps[0] and stamps[-1] <= ended


async def test_stamps_follow_itl_pacing(client: openai.AsyncOpenAI) -> None:
    n, itl = 6, 0.03
    chunks = await stream_chunks(client, f"[[arkq:stamp=1 tokens={n} itl_ms={itl * 1000:g}]]")
    stamps = [float(text) for text in deltas(chunks, "content")]
    assert len(stamps) == n
    assert stamps[-1] - stamps[0] >= (n - 1) * itl * 0.8  # lower bound only: timing can only run late
