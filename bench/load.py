"""The client side of a benchmark: the same requests streamed directly and through the queue.

The direct baseline is `ArkModelLink.stream`, the AsyncOpenAI client the workers themselves use, so the
difference between the two paths is the queue alone. Every request asks the emulator to `stamp` its
tokens (each token's text is the instant it was written), which gives the delivery latency of every
token on both paths with the same clock.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from model_module import ArkModelLink, TextDelta
from producer import Producer


def request(
    tokens: int, *, itl_ms: float = 0, ttft_ms: float = 0, tag: str = "", on_clock: bool = False
) -> list[dict[str, str]]:
    """A chat request for exactly `tokens` stamped tokens, paced on its own timer at `itl_ms` per token,
    or, `on_clock`, by the emulator's decode clock (`--pacing batched`: a GPU's continuous batching)."""
    pacing = "" if on_clock else f" itl_ms={itl_ms} ttft_ms={ttft_ms}"
    directive = f"[[arkq:stamp=1 tokens={tokens}{pacing}]]"
    return [{"role": "user", "content": f"{directive} benchmark {tag}"}]


@dataclass
class Stream:
    """What one client saw of one request; instants are `time.time()` on this machine."""

    began: float
    first_token: float | None = None
    ended: float | None = None
    tokens: int = 0
    #: For each token, the instant the server wrote it, and its receive time minus that instant.
    stamps: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)

    def receive(self, text: str) -> None:
        now, stamp = time.time(), float(text)
        if self.first_token is None:
            self.first_token = now
        self.tokens += 1
        self.stamps.append(stamp)
        self.delays.append(now - stamp)

    @property
    def ttft(self) -> float:
        assert self.first_token is not None, "no token arrived"
        return self.first_token - self.began


async def direct(link: ArkModelLink, messages: Sequence[dict[str, str]], max_tokens: int) -> Stream:
    seen = Stream(time.time())
    async with aclosing(link.stream(messages, max_tokens=max_tokens)) as events:
        async for event in events:
            if type(event) is TextDelta:
                seen.receive(event.text)
    seen.ended = time.time()
    return seen


async def queued(producer: Producer, messages: Sequence[dict[str, str]], max_tokens: int) -> Stream:
    """Enqueue and follow the job's events as a user does (`Job.events`), until it ends."""
    seen = Stream(time.time())
    job = await producer.enqueue(messages, max_tokens=max_tokens)
    async for event in job.events():
        if event.type == "token":
            seen.receive(event.text)
        elif event.type == "done":
            seen.ended = time.time()
        elif event.type in ("error", "cancelled", "reset"):
            raise RuntimeError(f"job {job.id}: unexpected {event!r}")
    return seen


async def sse_chat_ttft(
    session: aiohttp.ClientSession, gateway_url: str, messages: Sequence[dict[str, str]], max_tokens: int
) -> float:
    """Seconds from sending a streamed chat completion to the gateway to its first content chunk (the
    rest of the stream is read to its end)."""
    body = {"messages": list(messages), "max_tokens": max_tokens, "stream": True}
    began, first = time.time(), None
    async with session.post(f"{gateway_url}/v1/chat/completions", json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}: {await response.text()}")
        async for line in response.content:
            if first is None and line.startswith(b"data: {") and _has_content(json.loads(line[6:])):
                first = time.time()
    if first is None:
        raise RuntimeError("the gateway's stream carried no content")
    return first - began


def _has_content(chunk: dict[str, Any]) -> bool:
    return any(choice["delta"].get("content") for choice in chunk.get("choices", ()))


async def sse_events(
    session: aiohttp.ClientSession, url: str, opened: Callable[[], None] | None = None
) -> int:
    """How many events one SSE stream of the jobs API delivered, read to its end; `opened` is called
    once the response has begun."""
    count = 0
    async with session.get(url) as response:
        if response.status != 200:
            raise RuntimeError(f"gateway answered {response.status}: {await response.text()}")
        if opened is not None:
            opened()
        async for line in response.content:
            count += line.startswith(b"id:")
    return count


async def concurrently(count: int, run: Callable[[int], Awaitable[Stream]]) -> list[Stream]:
    return list(await asyncio.gather(*(run(index) for index in range(count))))


@dataclass
class Totals:
    """Tokens delivered over a wall-clock span, for throughput."""

    tokens: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.tokens / self.seconds


def steady_delays(streams: Sequence[Stream]) -> list[float]:
    """The delays of tokens written while every stream was streaming: after the last one's first token,
    before the first one's end. The start of a burst of streams (the worker starting them all) is left
    out, as is the tail where fewer and fewer remain."""
    begin = max(stream.stamps[0] for stream in streams)
    end = min(stream.stamps[-1] for stream in streams)
    steady = [
        delay
        for stream in streams
        for stamp, delay in zip(stream.stamps, stream.delays, strict=True)
        if begin <= stamp <= end
    ]
    # Streams too short to overlap (the first ended before the last began): every token counts.
    return steady or [delay for stream in streams for delay in stream.delays]


def totals(streams: Sequence[Stream]) -> Totals:
    began = min(stream.began for stream in streams)
    ended = max(stream.ended or stream.began for stream in streams)
    return Totals(sum(stream.tokens for stream in streams), ended - began)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `values`."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = math.ceil(fraction * len(ordered))  # the smallest value with `fraction` of them at or below it
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def summary_ms(values: Sequence[float]) -> dict[str, Any]:
    """p50 / p99 / mean of durations in seconds, reported in milliseconds."""
    return {
        "p50_ms": percentile(values, 0.50) * 1000,
        "p99_ms": percentile(values, 0.99) * 1000,
        "mean_ms": sum(values) / len(values) * 1000,
        "n": len(values),
    }
