"""Batched pacing: one decode clock per server, every running request advancing one token a step.

The streams ask for ``stamp``: each content token's text is the time the emulator wrote it, which with
batched pacing is the time of the step (or prefill) that produced it. So the tests read the server's
schedule from the tokens themselves: which streams were served in which pass, and how far apart the
passes were. Timing is checked as ranges with generous room (a busy machine only makes passes late), and
the structure (who got a token in which pass) exactly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations, pairwise
from typing import Any

import aiohttp
import pytest

from arkq.errors import ConfigError
from fake_llm import BatchingConfig, FakeLLMServer, create_app, running_fake_llm
from fake_llm.__main__ import batching_of, build_parser
from fake_llm.batching import DecodeClock, Slot
from fake_llm.registry import ActiveRequest
from fake_llm.stats import Stats
from tests.waiting import until

#: Steps of 20 ms whatever the batch, prefills of 10 ms: the structure tests.
EVEN = BatchingConfig(step_ms=20, step_ms_per_request=0, prefill_ms=10, prefill_ms_per_token=0)


@dataclass
class Seen:
    """What a client read of one streamed chat completion."""

    payloads: list[Any] = field(default_factory=list)  # every data: payload, "[DONE]" as the string
    stamps: list[float] = field(default_factory=list)  # the content tokens, read as times
    finish: str | None = None
    usage: dict[str, Any] | None = None
    first_at: float | None = None  # time.time() when the first content token arrived


async def chat(
    http: aiohttp.ClientSession,
    srv: FakeLLMServer,
    text: str,
    *,
    rid: str | None = None,
    on_token: Callable[[int], Awaitable[bool]] | None = None,
    **body: Any,
) -> Seen:
    """Stream one chat completion and read it raw. ``on_token(n)`` is awaited after the n-th content
    token; when it returns True the client stops reading and closes the connection."""
    payload: dict[str, Any] = {
        "model": "tgi",
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
        **body,
    }
    if rid is not None:
        payload["rid"] = rid
    seen = Seen()
    async with http.post(f"{srv.base_url}/chat/completions", json=payload) as response:
        assert response.status == 200
        async for line in response.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                seen.payloads.append("[DONE]")
                continue
            chunk = json.loads(data)
            seen.payloads.append(chunk)
            if chunk.get("usage"):
                seen.usage = chunk["usage"]
            for choice in chunk.get("choices", ()):
                seen.finish = choice["finish_reason"] or seen.finish
                content = choice["delta"].get("content")
                if content and "stamp=1" in text:
                    seen.first_at = seen.first_at or time.time()
                    seen.stamps.append(float(content))
                    if on_token is not None and await on_token(len(seen.stamps)):
                        return seen
    return seen


def shared(a: Sequence[float], b: Sequence[float]) -> tuple[list[float], list[float]]:
    """The stamps of two streams over the decode steps both ran in: from the later one's first decode
    step (its first token came from its prefill, in which running streams get nothing) to the earlier
    one's last token."""
    low, high = max(a[1], b[1]), min(a[-1], b[-1])
    return [s for s in a if low <= s <= high], [s for s in b if low <= s <= high]


async def abort(srv: FakeLLMServer, rid: str) -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{srv.url}/abort_request", json={"rid": rid}) as r:
        assert r.status == 200


async def test_the_streams_of_a_batch_get_their_tokens_in_the_same_steps() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:
        streams = await asyncio.gather(
            *(chat(http, srv, f"[[arkq:stamp=1 tokens=10]] stream {i}") for i in range(8))
        )
        stats = srv.stats
    assert all(len(seen.stamps) == 10 and seen.finish == "stop" for seen in streams)
    passes = sorted({stamp for seen in streams for stamp in seen.stamps})
    # One time per forward pass: every chunk of a pass carries the pass's time.
    assert len(passes) == stats.steps + stats.prefills
    assert stats.prefills >= 1 and stats.steps >= 9
    for a, b in combinations(streams, 2):
        mine, theirs = shared(a.stamps, b.stamps)
        assert mine == theirs and len(mine) >= 1
    for seen in streams:  # one token a pass, the decode steps 20 ms apart (a late step shortens the next)
        assert seen.stamps == sorted(set(seen.stamps))
        assert 0.020 * 0.8 <= median_gap(seen.stamps[1:]) <= 0.020 * 3
    assert (stats.pacing, stats.batch, stats.completed, stats.active) == ("batched", 0, 8, 0)


def median_gap(stamps: Sequence[float]) -> float:
    return statistics.median(b - a for a, b in pairwise(stamps))


async def test_the_step_time_grows_with_the_batch_as_configured() -> None:
    curve = BatchingConfig(step_ms=10, step_ms_per_request=2, prefill_ms=5, prefill_ms_per_token=0)
    count, tokens = 20, 16
    async with running_fake_llm(batching=curve) as srv, aiohttp.ClientSession() as http:
        alone = await chat(http, srv, f"[[arkq:stamp=1 tokens={tokens}]] alone")
        streams = await asyncio.gather(
            *(chat(http, srv, f"[[arkq:stamp=1 tokens={tokens}]] crowd {i}") for i in range(count))
        )
    solo = median_gap(alone.stamps[1:])  # decode steps of one request: 10 + 2 x 1 ms
    low, high = max(s.stamps[1] for s in streams), min(s.stamps[-1] for s in streams)
    full = sorted({stamp for s in streams for stamp in s.stamps if low <= stamp <= high})
    assert len(full) >= 4, "the streams ran together for some steps"
    crowded = median_gap(full)  # decode steps of all 20: 10 + 2 x 20 ms
    assert curve.step_seconds(1) * 0.8 <= solo <= curve.step_seconds(1) * 3
    assert curve.step_seconds(count) * 0.8 <= crowded <= curve.step_seconds(count) * 3
    assert crowded > 2 * solo


async def test_a_late_request_joins_at_a_step_boundary_after_its_prefill() -> None:
    late = BatchingConfig(step_ms=30, step_ms_per_request=0, prefill_ms=60, prefill_ms_per_token=0)
    async with running_fake_llm(batching=late) as srv, aiohttp.ClientSession() as http:
        joined: asyncio.Future[Seen] = asyncio.get_running_loop().create_future()
        sent_at: list[float] = []

        async def start_the_second(n: int) -> bool:
            if n == 3:
                sent_at.append(time.time())
                task = asyncio.ensure_future(chat(http, srv, "[[arkq:stamp=1 tokens=5]] second"))
                task.add_done_callback(lambda t: joined.set_result(t.result()))
            return False

        first = await chat(http, srv, "[[arkq:stamp=1 tokens=30]] first", on_token=start_the_second)
        second = await joined
    a, b = first.stamps, second.stamps
    assert len(a) == 30 and len(b) == 5
    assert b[0] not in a, "its first token came from a prefill pass, in which the running stream got none"
    assert b[1:] == [s for s in a if b[1] <= s <= b[-1]], "then it ran in the running stream's steps"
    before, after = max(s for s in a if s < b[0]), min(s for s in a if s > b[0])
    assert after == b[1], "it joined at the first step after its prefill"
    # Lower bounds with room: a step that ended late shortens what follows, to keep the schedule.
    assert b[0] - before >= 0.060 * 0.5, "the prefill took its time after the step it arrived in"
    assert after - before >= (0.060 + 0.030) * 0.5, "and held the running stream's next token back"
    assert second.first_at is not None and second.first_at - sent_at[0] >= 0.060 * 0.5


async def test_aborting_one_stream_leaves_the_others_undisturbed() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:

        async def abort_after_three(n: int) -> bool:
            if n == 3:
                await abort(srv, "b")
            return False

        a, b, c = await asyncio.gather(
            chat(http, srv, "[[arkq:stamp=1 tokens=25]] a", rid="a"),
            chat(http, srv, "[[arkq:stamp=1 tokens=25]] b", rid="b", on_token=abort_after_three),
            chat(http, srv, "[[arkq:stamp=1 tokens=25]] c", rid="c"),
        )
        stats = srv.stats
    assert b.finish == "abort" and b.usage is not None and 3 <= b.usage["completion_tokens"] < 25
    assert b.payloads[-1] == "[DONE]"
    assert (a.finish, c.finish, len(a.stamps), len(c.stamps)) == ("stop", "stop", 25, 25)
    mine, theirs = shared(a.stamps, c.stamps)
    assert mine == theirs and len(mine) >= 20
    assert 0.020 * 0.8 <= median_gap(mine) <= 0.020 * 3
    assert (stats.aborted, stats.completed, stats.active, stats.batch) == (1, 2, 0, 0)


async def test_a_client_that_goes_away_leaves_the_others_undisturbed() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:

        async def leave_after_three(n: int) -> bool:
            return n == 3

        a, b, c = await asyncio.gather(
            chat(http, srv, "[[arkq:stamp=1 tokens=20]] a"),
            chat(http, srv, "[[arkq:stamp=1 tokens=20]] b", on_token=leave_after_three),
            chat(http, srv, "[[arkq:stamp=1 tokens=20]] c"),
        )
        assert len(b.stamps) == 3
        # As in per-request pacing (and as reported of SGLang), the request goes on to its end unseen.
        await until(lambda: srv.stats.active == 0, 5, "the disconnected request's end")
        stats = srv.stats
    assert (len(a.stamps), len(c.stamps)) == (20, 20)
    mine, theirs = shared(a.stamps, c.stamps)
    assert mine == theirs and len(mine) >= 15
    assert (stats.disconnected, stats.completed, stats.aborted, stats.batch) == (1, 2, 0, 0)


async def test_a_disconnected_request_keeps_its_place_in_the_batch_until_aborted() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:

        async def leave(n: int) -> bool:
            return True

        await chat(http, srv, "[[arkq:stamp=1 tokens=500]] gone", rid="gone", on_token=leave)
        await until(lambda: srv.stats.disconnected == 1, 5, "the emulator to see the disconnect")
        steps = srv.stats.steps
        await until(lambda: srv.stats.steps >= steps + 2, 5, "more steps")
        assert (srv.stats.batch, srv.stats.active) == (1, 1), "it still takes a place in the batch"
        await abort(srv, "gone")
        await until(lambda: srv.stats.active == 0, 5, "the abort")
        assert (srv.stats.batch, srv.stats.aborted, srv.stats.completed) == (0, 1, 0)


async def test_a_request_with_its_own_pacing_keeps_its_own_timer() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:
        seen = await chat(http, srv, "[[arkq:stamp=1 tokens=6 itl_ms=5]]")
        assert (len(seen.stamps), seen.finish) == (6, "stop")
        assert (srv.stats.steps, srv.stats.prefills) == (0, 0), "it never joined the batch"
        assert median_gap(seen.stamps) < 0.020 * 0.8, "paced by its own 5 ms, not the 20 ms steps"


async def test_per_request_pacing_is_the_default_and_keeps_a_timer_per_request() -> None:
    async with running_fake_llm(itl_ms=20) as srv, aiohttp.ClientSession() as http:
        a, b = await asyncio.gather(
            chat(http, srv, "[[arkq:stamp=1 tokens=6]] a"), chat(http, srv, "[[arkq:stamp=1 tokens=6]] b")
        )
        async with http.get(f"{srv.url}/stats") as response:
            stats = await response.json()
    assert not set(a.stamps) & set(b.stamps), "each request writes on its own timer"
    assert median_gap(a.stamps) >= 0.020 * 0.8
    assert (stats["pacing"], stats["batch"], stats["steps"], stats["prefills"]) == ("per-request", 0, 0, 0)


async def test_stats_report_the_batch_while_it_runs() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:
        seen: list[dict[str, Any]] = []

        gauges: list[str] = []

        async def read_stats(n: int) -> bool:
            if n == 3:
                async with http.get(f"{srv.url}/stats") as response:
                    seen.append(await response.json())
                async with http.get(f"{srv.url}/metrics") as response:
                    gauges.extend(line for line in (await response.text()).splitlines() if "_reqs{" in line)
            return False

        await asyncio.gather(
            chat(http, srv, "[[arkq:stamp=1 tokens=8]] a", on_token=read_stats),
            chat(http, srv, "[[arkq:stamp=1 tokens=8]] b"),
        )
    stats = seen[0]
    assert (stats["pacing"], stats["batch"], stats["active"]) == ("batched", 2, 2)
    assert stats["steps"] >= 1 and stats["prefills"] >= 1
    assert gauges == [
        'sglang:num_running_reqs{model_name="tgi"} 2.0',
        'sglang:num_queue_reqs{model_name="tgi"} 0.0',
    ]


#: Requests whose streamed chunks and plain answers must be the same whichever the pacing.
SAME_ANSWERS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Tell me about the sea. [[arkq:tokens=12]]"}], "max_tokens": 9},
    {"messages": [{"role": "user", "content": "Think first. [[arkq:tokens=5 reasoning=3]]"}]},
    {"messages": [{"role": "user", "content": "Stop early."}], "stop": [" et"]},
    {"messages": [{"role": "user", "content": "[[arkq:tokens=10 stream_error=500 error_after=4]]"}]},
    {"messages": [{"role": "user", "content": "[[arkq:tokens=3 stream_error=503]]"}]},
    {"messages": [{"role": "user", "content": "[[arkq:tokens=0]]"}]},
    {
        "messages": [{"role": "user", "content": "Describe someone."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "person",
                "schema": {
                    "type": "object",
                    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                    "required": ["name", "age"],
                },
            },
        },
    },
    {
        "messages": [{"role": "user", "content": "What is the weather?"}],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    },
    {
        "messages": [
            {"role": "user", "content": "Tell me a story. [[arkq:tokens=20]]"},
            {"role": "assistant", "content": "Once"},
        ],
        "continue_final_message": True,
    },
]


def comparable(value: Any) -> Any:
    """A response with what differs from one run to the next (creation time, tool call ids) blanked."""
    if isinstance(value, dict):
        return {
            key: None
            if key == "created" or (key == "id" and str(item).startswith("call_"))
            else comparable(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [comparable(item) for item in value]
    return value


async def answers(srv: FakeLLMServer, stream: bool) -> list[Any]:
    """Each of SAME_ANSWERS asked of ``srv``: its HTTP status and body (streamed: its lines, with the data
    decoded)."""
    out: list[Any] = []
    async with aiohttp.ClientSession() as http:
        for index, body in enumerate(SAME_ANSWERS):
            payload = {"model": "tgi", "stream": stream, "rid": f"r{index}", **body}
            if stream:
                payload["stream_options"] = {"include_usage": True}
            async with http.post(f"{srv.base_url}/chat/completions", json=payload) as response:
                raw = await response.read()
            if stream:
                lines = [line for line in raw.split(b"\n") if line]
                decoded = [json.loads(line[6:]) if line.startswith(b"data: {") else line for line in lines]
                out.append((response.status, comparable(decoded)))
            else:
                out.append((response.status, comparable(json.loads(raw))))
    return out


@pytest.mark.parametrize("stream", [True, False])
async def test_answers_faults_schemas_and_continuations_are_the_same_in_both_pacings(stream: bool) -> None:
    fast = BatchingConfig(step_ms=1, step_ms_per_request=0, prefill_ms=1, prefill_ms_per_token=0)
    async with running_fake_llm() as per_request, running_fake_llm(batching=fast) as batched:
        expected, got = await answers(per_request, stream), await answers(batched, stream)
        assert batched.stats.steps > 0
        for stats in (per_request.stats, batched.stats):
            assert (stats.completed, stats.errors, stats.faults, stats.active) == (7, 2, 2, 0)
    assert got == expected


async def test_a_cut_connection_in_the_batch() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientPayloadError):
            await chat(http, srv, "[[arkq:stamp=1 tokens=10 cut_after=3]]")
        await until(lambda: srv.stats.active == 0, 5, "the cut request's end")
        assert (srv.stats.faults, srv.stats.completion_tokens, srv.stats.batch) == (1, 3, 0)


async def test_a_plain_request_runs_in_the_batch_and_can_be_aborted() -> None:
    async with running_fake_llm(batching=EVEN) as srv, aiohttp.ClientSession() as http:
        body = {"model": "tgi", "messages": [{"role": "user", "content": "[[arkq:tokens=4]]"}]}
        async with http.post(f"{srv.base_url}/chat/completions", json=body) as response:
            answer = await response.json()
        assert len(answer["choices"][0]["message"]["content"].split()) == 4
        assert (srv.stats.prefills, srv.stats.steps) == (1, 3), "a prefill for the first token, a step each"

        long = {
            "model": "tgi",
            "rid": "long",
            "messages": [{"role": "user", "content": "[[arkq:tokens=500]]"}],
        }

        async def ask() -> Any:  # a plain answer's response begins when the answer is complete
            async with http.post(f"{srv.base_url}/chat/completions", json=long) as response:
                return await response.json()

        call = asyncio.ensure_future(ask())
        await until(lambda: srv.stats.steps >= 6, 5, "some steps")
        await abort(srv, "long")
        aborted = await call
    choice = aborted["choices"][0]
    assert choice["finish_reason"] == "abort"
    assert 0 < aborted["usage"]["completion_tokens"] < 500
    assert len(choice["message"]["content"].split()) == aborted["usage"]["completion_tokens"]


def test_the_command_line_options() -> None:
    parser = build_parser()

    def parse(*argv: str) -> BatchingConfig | None:
        return batching_of(parser.parse_args(list(argv)))

    assert parse() is None
    assert parse("--pacing", "batched") == BatchingConfig()
    assert parse("--pacing", "batched", "--step-ms", "7", "--prefill-ms-per-token", "0") == BatchingConfig(
        step_ms=7, prefill_ms_per_token=0
    )
    with pytest.raises(ConfigError, match="--step-ms, --prefill-ms: only with --pacing batched"):
        parse("--step-ms", "7", "--prefill-ms", "2")
    with pytest.raises(ConfigError, match="--ttft-ms/--itl-ms pace each request"):
        parse("--pacing", "batched", "--itl-ms", "20")
    with pytest.raises(SystemExit):
        parser.parse_args(["--step-ms", "-1"])
    assert isinstance(parser.parse_args([]), argparse.Namespace)


def test_the_defaults_resemble_an_8b_model_on_one_h100() -> None:
    curve = BatchingConfig()
    assert 0.014 <= curve.step_seconds(1) <= 0.016
    assert 0.025 <= curve.step_seconds(256) <= 0.030
    assert 5_000 <= 512 / curve.step_seconds(512) <= 16_000  # tokens/s at 512 streams
    with pytest.raises(ValueError, match="step_ms must not be negative"):
        BatchingConfig(step_ms=-1)
    with pytest.raises(ValueError, match="with batching the decode clock paces them"):
        create_app(itl_ms=20, batching=curve)


async def test_a_failing_clock_lets_its_requests_go_and_starts_again() -> None:
    def broken(stamp: float) -> None:
        raise RuntimeError("a bug in a writer")

    clock = DecodeClock(BatchingConfig(step_ms=1, prefill_ms=1), Stats(pacing="batched"))
    first = Slot(ActiveRequest("a"), target=3, prompt_tokens=5, emit=broken)
    clock.join(first)
    await asyncio.wait_for(first.done, 2)
    assert first.active.aborted, "the request ends as aborted instead of hanging"
    second = Slot(ActiveRequest("b"), target=3, prompt_tokens=5, emit=None)
    clock.join(second)
    await asyncio.wait_for(second.done, 2)
    assert (second.sent, second.active.aborted) == (3, False)
    await clock.close()
