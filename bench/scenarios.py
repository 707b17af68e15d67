"""The benchmark scenarios: each measures the queue and, in the same run, the baseline it is held to.

A scenario returns its figures and its checks. A check compares one figure with the target the
project holds itself to; the figures are what they are on the machine at hand, which is why every one
of them comes with a baseline measured alongside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.load import (
    Stream,
    concurrently,
    direct,
    percentile,
    queued,
    request,
    sse_chat_ttft,
    sse_events,
    steady_delays,
    summary_ms,
    totals,
)
from bench.processes import free_port
from bench.stack import Stack, cpu_seconds, rss_bytes
from model_module import ArkModelLink
from producer import Producer, QueuedModelLink

#: What one H100 serving an 8B model emits at most, tokens/s: one worker must keep up with it.
WORKER_TARGET_TOKENS_PER_S = 30_000


@dataclass(frozen=True)
class Plan:
    """How much each scenario does. `QUICK` checks that everything runs; `FULL` is for the figures."""

    pickup_jobs: int = 300
    ttft_requests: int = 60
    ttft_ms: float = 20.0
    paced_streams: int = 128
    paced_tokens: int = 500
    itl_ms: float = 20.0
    flat_streams: int = 128
    flat_tokens: int = 1000
    memory_streams: int = 256
    memory_tokens: int = 250
    worker_counts: tuple[int, ...] = (1, 2, 4)
    scaling_streams: int = 256
    concurrencies: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
    #: Tokens per point of the concurrency sweep, shared among its streams.
    sweep_tokens: int = 120_000
    #: The gateway: repetitions (the median is reported), jobs and SSE readers per job, tokens each,
    #: and the emulated prefill that lets every reader connect before its job's first token.
    gateway_repetitions: int = 3
    gateway_jobs: int = 64
    gateway_readers: int = 4
    gateway_tokens: int = 200
    gateway_prefill_ms: float = 1000.0
    #: An agent's call (`generate_response`): repetitions (the median is reported), calls on each path
    #: per repetition, and the tokens of the short answer each call gets.
    agent_repetitions: int = 3
    agent_calls: int = 60
    agent_tokens: int = 8
    #: Metrics on against off: repetitions of each (the median is reported, the order alternates), and
    #: how often the worker's /metrics is scraped meanwhile (Prometheus would, every few seconds).
    metrics_repetitions: int = 5
    metrics_scrape_s: float = 1.0
    #: At a GPU's pace (the emulator's decode clock): streams of each run, tokens each, repetitions.
    gpu_streams: tuple[int, ...] = (128, 512)
    gpu_tokens: int = 200
    gpu_repetitions: int = 3
    #: One-token jobs: how many per throughput round, rounds, and the backlogs and worker counts whose
    #: Redis commands per job are compared.
    short_jobs: int = 2000
    short_repetitions: int = 3
    short_backlogs: tuple[int, ...] = (10, 10_000)
    short_workers: tuple[int, ...] = (1, 8)
    #: Pinned to cores: streams at a GPU's pace per worker, and tokens each.
    pinned_streams_per_worker: int = 256
    pinned_tokens: int = 200


FULL = Plan()
QUICK = Plan(
    pickup_jobs=20,
    ttft_requests=5,
    paced_streams=16,
    paced_tokens=20,
    flat_streams=16,
    flat_tokens=100,
    memory_streams=32,
    memory_tokens=20,
    worker_counts=(1, 2),
    scaling_streams=16,
    concurrencies=(16, 64),
    sweep_tokens=3_200,
    gateway_jobs=8,
    gateway_readers=2,
    gateway_tokens=20,
    agent_calls=5,
    metrics_repetitions=1,
    gpu_streams=(16,),
    gpu_tokens=40,
    gpu_repetitions=1,
    short_jobs=50,
    short_repetitions=1,
    short_backlogs=(10, 50),
    short_workers=(1, 2),
    pinned_streams_per_worker=16,
    pinned_tokens=40,
)


@dataclass
class Check:
    """One target: `value` must be at most (or, with `at_least`, at least) `limit`."""

    what: str
    value: float
    limit: float
    unit: str
    at_least: bool = False

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


@dataclass
class Outcome:
    figures: dict[str, Any]
    checks: list[Check]


@dataclass
class Bench:
    """What the scenarios share: the running stack and the clients on both paths."""

    stack: Stack
    producer: Producer
    link: ArkModelLink
    plan: Plan

    async def queued_streams(self, count: int, tokens: int, itl_ms: float = 0) -> list[Stream]:
        return await concurrently(
            count, lambda i: queued(self.producer, request(tokens, itl_ms=itl_ms, tag=str(i)), tokens)
        )

    async def direct_streams(self, count: int, tokens: int, itl_ms: float = 0) -> list[Stream]:
        return await concurrently(
            count, lambda i: direct(self.link, request(tokens, itl_ms=itl_ms, tag=str(i)), tokens)
        )

    async def flat_out(self, count: int, tokens: int) -> dict[str, float]:
        """`count` unpaced streams through the queue: delivered tokens/s and the CPU each process spent."""
        before = self._cpu()
        streams = await self.queued_streams(count, tokens)
        spent = {name: after - before[name] for name, after in self._cpu().items()}
        delivered = totals(streams)
        _expect_tokens(streams, tokens)
        return {
            "tokens": delivered.tokens,
            "tokens_per_s": delivered.per_second,
            "worker_cpu_us_per_token": spent["worker"] / delivered.tokens * 1e6,
            "emulator_cpu_us_per_token": spent["emulator"] / delivered.tokens * 1e6,
            "redis_cpu_us_per_token": spent["redis"] / delivered.tokens * 1e6,
        }

    def _cpu(self) -> dict[str, float]:
        stack = self.stack
        return {"worker": stack.worker_cpu_s(), "emulator": stack.llm_cpu_s(), "redis": stack.redis_cpu_s()}


def _expect_tokens(streams: list[Stream], tokens: int) -> None:
    """A benchmark that lost tokens measured nothing: every stream must have delivered all of them."""
    short = [stream.tokens for stream in streams if stream.tokens != tokens]
    if short:
        raise RuntimeError(f"{len(short)} streams delivered {short[:5]}... tokens instead of {tokens}")


async def emulator(bench: Bench) -> Outcome:
    """The emulator alone, flat out, streamed directly: it must not be what limits the queue."""
    plan = bench.plan
    before = bench.stack.llm_cpu_s()
    streams = await bench.direct_streams(plan.flat_streams, plan.flat_tokens)
    cpu = bench.stack.llm_cpu_s() - before
    _expect_tokens(streams, plan.flat_tokens)
    delivered = totals(streams)
    cpu_per_token = cpu / delivered.tokens
    capacity = 1 / cpu_per_token
    figures = {
        "streams": plan.flat_streams,
        "tokens_per_s": delivered.per_second,
        "emulator_cpu_us_per_token": cpu_per_token * 1e6,
        "capacity_tokens_per_s": capacity,
    }
    what = "emulator tokens per CPU second"
    return Outcome(figures, [Check(what, capacity, WORKER_TARGET_TOKENS_PER_S, "tok/s", at_least=True)])


async def pickup(bench: Bench) -> Outcome:
    """Enqueue to running, one job at a time on an idle fleet; the floor is one pub/sub hop."""
    latencies = []
    for index in range(bench.plan.pickup_jobs):
        began = time.time()
        job = await bench.producer.enqueue(request(1, tag=f"pickup {index}"), max_tokens=4)
        result = await job.result(timeout=30)
        latencies.append(result.timings.started_at - began)
    hop = await _pubsub_hops(bench.producer.redis, bench.plan.pickup_jobs)
    figures = {"pickup": summary_ms(latencies), "baseline_pubsub_hop": summary_ms(hop)}
    figures["p50_vs_baseline"] = figures["pickup"]["p50_ms"] / figures["baseline_pubsub_hop"]["p50_ms"]
    return Outcome(
        figures,
        [
            Check("pickup p50", figures["pickup"]["p50_ms"], 2.0, "ms"),
            Check("pickup p99", figures["pickup"]["p99_ms"], 10.0, "ms"),
        ],
    )


async def _pubsub_hops(redis: Redis, count: int) -> list[float]:
    """Publish to a subscriber over the same Redis, `count` times: the least any wake-up can take."""
    pubsub = redis.pubsub()
    await pubsub.subscribe("arkq:bench:hop")
    hops = []
    try:
        for _ in range(count):
            began = time.time()
            await redis.publish("arkq:bench:hop", b"x")
            while await pubsub.get_message(ignore_subscribe_messages=True, timeout=1) is None:
                pass
            hops.append(time.time() - began)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return hops


async def ttft(bench: Bench) -> Outcome:
    """First token through the queue (enqueue to subscriber) against the same request made directly."""
    plan = bench.plan
    through_queue, straight = [], []
    for index in range(plan.ttft_requests):  # alternated, so both paths see the same machine
        messages = request(4, ttft_ms=plan.ttft_ms, tag=f"ttft {index}")
        straight.append((await direct(bench.link, messages, 8)).ttft)
        through_queue.append((await queued(bench.producer, messages, 8)).ttft)
    figures = {"queue": summary_ms(through_queue), "direct": summary_ms(straight)}
    added = figures["queue"]["p50_ms"] - figures["direct"]["p50_ms"]
    figures["added_p50_ms"] = added
    return Outcome(figures, [Check("added time to first token, p50", added, 5.0, "ms")])


async def paced(bench: Bench) -> Outcome:
    """A GPU's pace on many streams: tokens/s and each token's delivery delay, queue against direct."""
    plan = bench.plan
    count, tokens = plan.paced_streams, plan.paced_tokens
    straight = await bench.direct_streams(count, tokens, plan.itl_ms)
    cpu_before = bench.stack.worker_cpu_s()
    through_queue = await bench.queued_streams(count, tokens, plan.itl_ms)
    worker_cpu = bench.stack.worker_cpu_s() - cpu_before
    for streams in (straight, through_queue):
        _expect_tokens(streams, tokens)
    delays = {
        "queue": [delay for stream in through_queue for delay in stream.delays],
        "direct": [delay for stream in straight for delay in stream.delays],
    }
    steady = {"queue": steady_delays(through_queue), "direct": steady_delays(straight)}
    queue_rate = totals(through_queue)
    figures: dict[str, Any] = {
        "streams": count,
        "tokens_per_stream_per_s": 1000 / plan.itl_ms,
        "queue_tokens_per_s": queue_rate.per_second,
        "direct_tokens_per_s": totals(straight).per_second,
        "worker_cpu_us_per_token": worker_cpu / queue_rate.tokens * 1e6,
        "worker_cpu_share": worker_cpu / queue_rate.seconds,
        # Every token, the burst of starting streams included:
        "delay_queue_with_start": summary_ms(delays["queue"]),
        "delay_direct_with_start": summary_ms(delays["direct"]),
        # Tokens written while all streams were running (`steady_delays`): the targets' figures.
        "delay_queue": summary_ms(steady["queue"]),
        "delay_direct": summary_ms(steady["direct"]),
        "delay_cdf_ms": {path: _percentiles_ms(values) for path, values in steady.items()},
    }
    ratio = figures["queue_tokens_per_s"] / figures["direct_tokens_per_s"]
    figures["throughput_ratio"] = ratio
    through, straight_delay = figures["delay_queue"], figures["delay_direct"]
    added_p50 = through["p50_ms"] - straight_delay["p50_ms"]
    added_p99 = through["p99_ms"] - straight_delay["p99_ms"]
    figures["added_token_delay_p50_ms"], figures["added_token_delay_p99_ms"] = added_p50, added_p99
    return Outcome(
        figures,
        [
            Check("paced throughput, queue / direct", ratio, 0.95, "x", at_least=True),
            Check("added per-token delay, p50 (all streams running)", added_p50, 1.0, "ms"),
            Check("added per-token delay, p99 (all streams running)", added_p99, 5.0, "ms"),
        ],
    )


def _percentiles_ms(values: list[float]) -> list[float]:
    """The 1st to 99th percentiles, for a plot of the distribution."""
    return [percentile(values, q / 100) * 1000 for q in range(1, 100)]


async def flat_out(bench: Bench) -> Outcome:
    """One worker, unpaced streams: the CPU it spends per token bounds what it can deliver."""
    plan = bench.plan
    bench.stack.workers(1)
    straight = await bench.direct_streams(plan.flat_streams, plan.flat_tokens)
    figures = await bench.flat_out(plan.flat_streams, plan.flat_tokens)
    figures["direct_tokens_per_s"] = totals(straight).per_second
    figures["worker_capacity_tokens_per_s"] = 1e6 / figures["worker_cpu_us_per_token"]
    figures["streams"] = plan.flat_streams
    limit = 1e6 / WORKER_TARGET_TOKENS_PER_S
    return Outcome(figures, [Check("worker CPU per token", figures["worker_cpu_us_per_token"], limit, "us")])


async def memory(bench: Bench) -> Outcome:
    """A fresh worker's resident memory, idle and at its peak while it holds many streams."""
    plan = bench.plan
    bench.stack.workers(0)
    (pid,) = bench.stack.workers(1)
    await bench.queued_streams(4, 8)  # its connections and imports warmed up
    idle = rss_bytes(pid)
    peak = idle

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_bytes(pid))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    try:
        streams = await bench.queued_streams(plan.memory_streams, plan.memory_tokens, plan.itl_ms)
    finally:
        sampler.cancel()
    _expect_tokens(streams, plan.memory_tokens)
    mib = 1024 * 1024
    figures = {
        "streams": plan.memory_streams,
        "idle_rss_mib": idle / mib,
        "peak_rss_mib": peak / mib,
        "peak_vs_idle": peak / idle,
    }
    return Outcome(figures, [Check("worker peak RSS", peak / mib, 200.0, "MiB")])


async def scaling(bench: Bench) -> Outcome:
    """Tokens/s with 1, 2, 4... workers, and the cost of concurrency from few streams to many."""
    plan = bench.plan
    by_workers = []
    for count in plan.worker_counts:
        bench.stack.workers(count)
        tokens = max(20, plan.sweep_tokens // plan.scaling_streams)
        figures = await bench.flat_out(plan.scaling_streams, tokens)
        by_workers.append({"workers": count, **figures})
    bench.stack.workers(1)
    by_streams = []
    for count in plan.concurrencies:
        tokens = max(20, plan.sweep_tokens // count)
        straight = await bench.direct_streams(count, tokens)
        figures = await bench.flat_out(count, tokens)
        by_streams.append({"streams": count, "direct_tokens_per_s": totals(straight).per_second, **figures})
    return Outcome({"by_workers": by_workers, "by_streams": by_streams}, [])


async def gateway(bench: Bench) -> Outcome:
    """The HTTP gateway beside the producer path, in the same run, each figure the median of
    `gateway_repetitions` rounds:

    - the time it adds to the first token at an SSE client: OpenAI's streamed chat completion against
      the producer following the same kind of job (`Job.events`), requests alternated;
    - its CPU per event delivered live to `gateway_jobs` x `gateway_readers` SSE readers of the jobs
      API, every reader following before its job's first token (an emulated prefill of
      `gateway_prefill_ms` gives them time to connect), with the tokens flat out and at a GPU's pace
      (`itl_ms`). Flat out is the target's figure, as for the worker's CPU per token; at a GPU's pace
      every event is a write of its own to each reader."""
    plan = bench.plan
    url, pid = bench.stack.gateway()
    rounds: list[dict[str, float]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        for repetition in range(plan.gateway_repetitions):
            via_producer, via_gateway = [], []
            for index in range(plan.ttft_requests):  # alternated, so both paths see the same machine
                messages = request(4, ttft_ms=plan.ttft_ms, tag=f"gateway {repetition} {index}")
                via_producer.append((await queued(bench.producer, messages, 8)).ttft)
                via_gateway.append(await sse_chat_ttft(session, url, messages, 8))
            producer_p50, gateway_p50 = percentile(via_producer, 0.5), percentile(via_gateway, 0.5)
            flat = await _fan_out(bench, session, url, pid, 0, f"flat {repetition}")
            paced = await _fan_out(bench, session, url, pid, plan.itl_ms, f"paced {repetition}")
            rounds.append(
                {
                    "producer_ttft_p50_ms": producer_p50 * 1000,
                    "gateway_ttft_p50_ms": gateway_p50 * 1000,
                    "added_ttft_p50_ms": (gateway_p50 - producer_p50) * 1000,
                    "cpu_us_per_event": flat["cpu_us_per_event"],
                    "events": flat["events"],
                    "readers_connected_ms": flat["readers_connected_ms"],
                    "paced_cpu_us_per_event": paced["cpu_us_per_event"],
                    "paced_events": paced["events"],
                    "paced_readers_connected_ms": paced["readers_connected_ms"],
                }
            )
    figures: dict[str, Any] = {
        name: statistics.median(r[name] for r in rounds)
        for name in (
            "producer_ttft_p50_ms",
            "gateway_ttft_p50_ms",
            "added_ttft_p50_ms",
            "cpu_us_per_event",
            "paced_cpu_us_per_event",
        )
    }
    figures.update(
        sse_readers=plan.gateway_jobs * plan.gateway_readers,
        tokens_per_job=plan.gateway_tokens,
        paced_tokens_per_stream_per_s=1000 / plan.itl_ms,
        rounds=rounds,
    )
    return Outcome(
        figures,
        [
            Check("gateway added time to first token, p50", figures["added_ttft_p50_ms"], 2.0, "ms"),
            Check(
                "gateway CPU per delivered event (live, flat out)", figures["cpu_us_per_event"], 20.0, "us"
            ),
        ],
    )


async def _fan_out(
    bench: Bench, session: aiohttp.ClientSession, url: str, pid: int, itl_ms: float, tag: str
) -> dict[str, float]:
    """`gateway_jobs` jobs, each followed by `gateway_readers` SSE readers through the gateway: its CPU
    per event delivered, and how long after the jobs were queued the last reader's stream began (under
    `gateway_prefill_ms`: every reader was following before the first token)."""
    plan = bench.plan
    prefill_ms = plan.gateway_prefill_ms
    queued_at = time.time()
    jobs = [
        await bench.producer.enqueue(
            request(plan.gateway_tokens, itl_ms=itl_ms, ttft_ms=prefill_ms, tag=f"fan {tag} {i}"),
            max_tokens=plan.gateway_tokens,
        )
        for i in range(plan.gateway_jobs)
    ]
    opened: list[float] = []
    before = cpu_seconds(pid)
    delivered = await asyncio.gather(
        *(
            sse_events(session, f"{url}/v1/jobs/{job.id}/events", lambda: opened.append(time.time()))
            for job in jobs
            for _ in range(plan.gateway_readers)
        )
    )
    spent = cpu_seconds(pid) - before
    if len(set(delivered)) != 1 or delivered[0] < plan.gateway_tokens:
        raise RuntimeError(f"SSE readers got {sorted(set(delivered))} events, not all the same")
    events = sum(delivered)
    return {
        "cpu_us_per_event": spent / events * 1e6,
        "events": events,
        "readers_connected_ms": (max(opened) - queued_at) * 1000,
    }


async def agent_call(bench: Bench) -> Outcome:
    """What an agent pays for its model call going through the queue: one `generate_response` of a short
    answer on `QueuedModelLink` against the same call on `ArkModelLink` (one non-streamed request),
    calls alternated so that both paths see the same machine, each figure the median of
    `agent_repetitions` rounds. The queue's call is a whole job: enqueue, a worker's pickup, its stream
    from the server, the events back and the end."""
    plan = bench.plan
    direct, queued = bench.link, QueuedModelLink(producer=bench.producer, max_tokens=16, temperature=0.0)
    for path in (direct, queued):  # connections opened, code paths warm
        await path.generate_response(_short_answer(plan.agent_tokens, "warm-up"))
    rounds: list[dict[str, float]] = []
    for repetition in range(plan.agent_repetitions):
        straight, through_queue = [], []
        for index in range(plan.agent_calls):
            messages = _short_answer(plan.agent_tokens, f"{repetition} {index}")
            began = time.perf_counter()
            answer = await direct.generate_response(messages)
            straight.append(time.perf_counter() - began)
            began = time.perf_counter()
            if await queued.generate_response(messages) != answer:
                raise RuntimeError(f"the queue answered {messages} otherwise than the direct link")
            through_queue.append(time.perf_counter() - began)
        direct_p50, queue_p50 = percentile(straight, 0.5), percentile(through_queue, 0.5)
        rounds.append(
            {
                "direct_p50_ms": direct_p50 * 1000,
                "queue_p50_ms": queue_p50 * 1000,
                "added_p50_ms": (queue_p50 - direct_p50) * 1000,
                "queue_p99_ms": percentile(through_queue, 0.99) * 1000,
                "direct_p99_ms": percentile(straight, 0.99) * 1000,
            }
        )
    figures: dict[str, Any] = {
        name: statistics.median(r[name] for r in rounds)
        for name in ("direct_p50_ms", "queue_p50_ms", "added_p50_ms", "direct_p99_ms", "queue_p99_ms")
    }
    figures.update(calls_per_round=plan.agent_calls, answer_tokens=plan.agent_tokens, rounds=rounds)
    what = "added time of one generate_response, p50 (short answer)"
    return Outcome(figures, [Check(what, figures["added_p50_ms"], 5.0, "ms")])


def _short_answer(tokens: int, tag: str) -> list[dict[str, str]]:
    """An agent's call whose answer is `tokens` tokens, at the emulator's own pace."""
    return [{"role": "user", "content": f"[[arkq:tokens={tokens}]] a short answer, please ({tag})"}]


async def metrics(bench: Bench) -> Outcome:
    """What the worker's Prometheus metrics cost: its CPU per token flat out (`flat_out`'s figure) with
    `worker.metrics_port` set, while /metrics is scraped every `metrics_scrape_s`, against the same
    worker without metrics, each the median of `metrics_repetitions` rounds, on and off alternating
    which goes first. Within 5%, or the metrics are not invisible."""
    plan = bench.plan
    rounds: list[dict[str, float]] = []
    for repetition in range(plan.metrics_repetitions):
        found: dict[str, float] = {}
        for mode in ("off", "on") if repetition % 2 == 0 else ("on", "off"):
            if mode == "off":
                bench.stack.restart_workers(1)
                flat = await bench.flat_out(plan.flat_streams, plan.flat_tokens)
                found[mode] = flat["worker_cpu_us_per_token"]
                continue
            port = free_port()
            bench.stack.restart_workers(1, worker__metrics_port=str(port), worker__metrics_host="127.0.0.1")
            scraper = asyncio.create_task(_scrape(port, plan.metrics_scrape_s))
            flat = await bench.flat_out(plan.flat_streams, plan.flat_tokens)
            if scraper.done():  # a scrape failed: the figure would be of a worker not scraped
                scraper.result()
            scraper.cancel()
            found[mode] = flat["worker_cpu_us_per_token"]
        rounds.append(found)
    bench.stack.restart_workers(1)
    off = statistics.median(r["off"] for r in rounds)
    on = statistics.median(r["on"] for r in rounds)
    figures: dict[str, Any] = {
        "worker_cpu_us_per_token_metrics_off": off,
        "worker_cpu_us_per_token_metrics_on": on,
        "ratio_on_off": on / off,
        "scrape_interval_s": plan.metrics_scrape_s,
        "streams": plan.flat_streams,
        "tokens_per_stream": plan.flat_tokens,
        "rounds": rounds,
    }
    return Outcome(
        figures,
        [Check("worker CPU per token, metrics on / off", figures["ratio_on_off"], 1.05, "x")],
    )


async def _scrape(port: int, every_s: float) -> None:
    """Read the worker's /metrics every `every_s` until cancelled, as Prometheus would."""
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                response.raise_for_status()
                await response.read()
            await asyncio.sleep(every_s)


#: The emulator's decode clock (`arkq fake-llm --pacing batched`, its default curve), as the stack runs it.
EMULATOR_CLOCK = {
    "pacing": "batched",
    "step_ms": 15.0,
    "step_ms_per_request": 0.05,
    "prefill_ms": 15.0,
    "prefill_ms_per_token": 0.03,
}


async def gpu_pace(bench: Bench) -> Outcome:
    """Tokens at a GPU's pace: the emulator's decode clock gives every running stream its next token at
    each step, the chunks of a step together, as SGLang's scheduler does. For each number of streams,
    `gpu_repetitions` rounds of the same streams direct and through the queue (alternating which goes
    first): the worker's CPU per token, the delay the queue adds to each token (its receive time less
    the step's stamp, queue against direct, p50 and p99 while every stream runs) and the throughput of
    the whole run, its burst of starting streams included. Each figure: min, median and max over the
    rounds; a target is met when the median meets it."""
    plan = bench.plan
    bench.stack.restart_workers(1)
    figures: dict[str, Any] = {"emulator": EMULATOR_CLOCK, "tokens_per_stream": plan.gpu_tokens}
    checks: list[Check] = []
    for count in plan.gpu_streams:
        rounds = [
            await _gpu_round(bench, count, first_direct=r % 2 == 0) for r in range(plan.gpu_repetitions)
        ]
        spread = {name: _spread([r[name] for r in rounds]) for name in rounds[0]}
        figures[f"streams_{count}"] = {"streams": count, **spread, "rounds": rounds}
        median = {name: value["median"] for name, value in spread.items()}
        checks += [
            Check(
                f"worker CPU per token, {count} streams at a GPU's pace",
                median["worker_cpu_us_per_token"],
                30.0,
                "us",
            ),
            Check(f"added per-token delay p50, {count} streams", median["added_delay_p50_ms"], 1.0, "ms"),
            Check(f"added per-token delay p99, {count} streams", median["added_delay_p99_ms"], 5.0, "ms"),
            Check(
                f"throughput over the whole run, queue / direct, {count} streams",
                median["throughput_ratio"],
                0.98,
                "x",
                at_least=True,
            ),
        ]
        if count >= BURST_STREAMS:
            what = f"worker CPU to start a burst of {count} jobs (to the last first token)"
            checks.append(Check(what, median["burst_start_worker_cpu_s"], 0.3 * count / BURST_STREAMS, "s"))
    return Outcome(figures, checks)


#: The burst the issue's start-up target names: 512 arriving jobs in under 0.3 s of worker CPU.
BURST_STREAMS = 512


class CpuSamples:
    """A process's CPU seconds sampled every few milliseconds while the block runs, so a figure can be
    read at an instant found afterwards (`at`, interpolated)."""

    EVERY_S = 0.005

    def __init__(self, cpu_s: Callable[[], float]):
        self._cpu_s = cpu_s
        self._samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> CpuSamples:
        self._samples.append((time.time(), self._cpu_s()))
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._samples.append((time.time(), self._cpu_s()))

    async def _sample(self) -> None:
        while True:
            await asyncio.sleep(self.EVERY_S)
            self._samples.append((time.time(), self._cpu_s()))

    def at(self, instant: float) -> float:
        """The CPU seconds at `instant` (`time.time()`), between the samples around it."""
        for (t0, c0), (t1, c1) in itertools.pairwise(self._samples):
            if t0 <= instant <= t1:
                return c0 if t1 == t0 else c0 + (c1 - c0) * (instant - t0) / (t1 - t0)
        return self._samples[0][1] if instant < self._samples[0][0] else self._samples[-1][1]


async def _gpu_round(bench: Bench, count: int, *, first_direct: bool) -> dict[str, float]:
    tokens = bench.plan.gpu_tokens

    async def direct_run() -> list[Stream]:
        return await concurrently(
            count, lambda i: direct(bench.link, request(tokens, tag=f"d{i}", on_clock=True), tokens)
        )

    async def queued_run() -> tuple[list[Stream], float, float, float]:
        before, redis_before = bench.stack.worker_cpu_s(), bench.stack.redis_cpu_s()
        async with CpuSamples(bench.stack.worker_cpu_s) as samples:
            streams = await concurrently(
                count, lambda i: queued(bench.producer, request(tokens, tag=f"q{i}", on_clock=True), tokens)
            )
        # The burst: from the first enqueue to the last stream's first token (the tokens streamed
        # meanwhile count too, so this is more than the starts alone cost).
        began = min(stream.began for stream in streams)
        started = max(stream.first_token or stream.began for stream in streams)
        burst = samples.at(started) - samples.at(began)
        cpu, redis_cpu = bench.stack.worker_cpu_s() - before, bench.stack.redis_cpu_s() - redis_before
        return streams, cpu, redis_cpu, burst

    if first_direct:
        straight = await direct_run()
        through, cpu, redis_cpu, burst_cpu = await queued_run()
    else:
        through, cpu, redis_cpu, burst_cpu = await queued_run()
        straight = await direct_run()
    for streams in (straight, through):
        _expect_tokens(streams, tokens)
    steady_queue, steady_direct = summary_ms(steady_delays(through)), summary_ms(steady_delays(straight))
    delivered = totals(through)
    return {
        "worker_cpu_us_per_token": cpu / delivered.tokens * 1e6,
        "redis_cpu_us_per_token": redis_cpu / delivered.tokens * 1e6,
        "queue_tokens_per_s": delivered.per_second,
        "direct_tokens_per_s": totals(straight).per_second,
        "throughput_ratio": delivered.per_second / totals(straight).per_second,
        "delay_queue_p50_ms": steady_queue["p50_ms"],
        "delay_direct_p50_ms": steady_direct["p50_ms"],
        "added_delay_p50_ms": steady_queue["p50_ms"] - steady_direct["p50_ms"],
        "added_delay_p99_ms": steady_queue["p99_ms"] - steady_direct["p99_ms"],
        "burst_start_worker_cpu_s": burst_cpu,
    }


async def short_jobs(bench: Bench) -> Outcome:
    """One-token jobs through one worker, against as many one-token requests sent direct: jobs per
    second, the worker's CPU per job (its jobs per CPU-second is what one worker core sustains), and
    Redis commands per job, compared from a backlog of a few jobs (rounds of them, `short_jobs` jobs in
    all) to a large one and from one worker to several (each command of the fleet counts: enqueue,
    pickup, claim, lease, events, result)."""
    plan = bench.plan
    bench.stack.restart_workers(1)
    rounds = [await _short_round(bench, plan.short_jobs) for _ in range(plan.short_repetitions)]
    started = time.perf_counter()
    await asyncio.gather(
        *(request_direct(bench.link, _short_answer(1, f"direct {i}")) for i in range(plan.short_jobs))
    )
    direct_per_s = plan.short_jobs / (time.perf_counter() - started)
    by_backlog = {n: await _commands_per_job(bench, n, plan.short_jobs) for n in plan.short_backlogs}
    by_workers: dict[int, float] = {}
    for count in plan.short_workers:
        bench.stack.restart_workers(count)
        by_workers[count] = (await _short_round(bench, plan.short_jobs))["redis_commands_per_job"]
    bench.stack.restart_workers(1)
    spread = {name: _spread([r[name] for r in rounds]) for name in rounds[0]}
    median = {name: value["median"] for name, value in spread.items()}
    backlog_ratio = max(by_backlog.values()) / min(by_backlog.values())
    workers_ratio = max(by_workers.values()) / min(by_workers.values())
    figures: dict[str, Any] = {
        "jobs": plan.short_jobs,
        **spread,
        "direct_requests_per_s": direct_per_s,
        "redis_commands_per_job_by_backlog": by_backlog,
        "redis_commands_per_job_by_workers": by_workers,
        "rounds": rounds,
    }
    return Outcome(
        figures,
        [
            Check(
                "one-token jobs per worker CPU-second",
                median["jobs_per_cpu_s"],
                1500,
                "jobs/s",
                at_least=True,
            ),
            Check("Redis commands per job, largest / smallest backlog", backlog_ratio, 1.10, "x"),
            Check("Redis commands per job, most / fewest workers", workers_ratio, 1.10, "x"),
        ],
    )


async def request_direct(link: ArkModelLink, messages: list[dict[str, str]]) -> None:
    async with aclosing(link.stream(messages, max_tokens=1)) as events:
        async for _ in events:
            pass


async def _commands_per_job(bench: Bench, backlog: int, jobs: int) -> float:
    """Redis commands per job with `backlog` jobs enqueued at once, over rounds of that many until at
    least `jobs` have run: a few jobs alone would weigh any periodic command (a heartbeat, a reap) as
    several commands a job."""
    rounds = max(1, -(-jobs // backlog))
    counts = [(await _short_round(bench, backlog))["redis_commands_per_job"] for _ in range(rounds)]
    return statistics.fmean(counts)


async def _short_round(bench: Bench, count: int) -> dict[str, float]:
    """`count` one-token jobs enqueued at once and run to their ends; what it took."""
    redis, queue = bench.producer.redis, bench.producer.config.queue.name
    await redis.config_resetstat()
    cpu_before, began = bench.stack.worker_cpu_s(), time.perf_counter()
    redis_before = bench.stack.redis_cpu_s()
    jobs = await asyncio.gather(
        *(bench.producer.enqueue(_short_answer(1, f"{began} {i}"), max_tokens=1) for i in range(count))
    )
    ours = 0  # the commands this function sends, left out of the count
    while await redis.zcard(queue):
        ours += 1
        await asyncio.sleep(0.02)
    elapsed = time.perf_counter() - began
    cpu = bench.stack.worker_cpu_s() - cpu_before
    redis_cpu = bench.stack.redis_cpu_s() - redis_before
    results = await asyncio.gather(*(job.fetch_result() for job in jobs))
    ours += 1 + len(results)  # the last ZCARD, the result reads
    stats = await redis.info("commandstats")
    if any(result is None or result.status != "done" for result in results):
        raise RuntimeError("a one-token job did not end done")
    commands = sum(int(figures["calls"]) for name, figures in stats.items() if name != "cmdstat_info") - ours
    return {
        "jobs_per_s": count / elapsed,
        "worker_cpu_ms_per_job": cpu / count * 1000,
        "jobs_per_cpu_s": count / cpu if cpu else float("inf"),
        "redis_commands_per_job": commands / count,
        "redis_cpu_ms_per_job": redis_cpu / count * 1000,
    }


async def pinned(bench: Bench) -> Outcome:
    """Workers each on a core of their own (`os.sched_setaffinity`), the rest of the stack (Redis, the
    emulator, this client) on the cores left: tokens/s per worker core at a GPU's pace. With fewer than
    three cores, one worker on the last core and everything else on the others."""
    plan = bench.plan
    cores = sorted(os.sched_getaffinity(0))
    workers = max(1, len(cores) - 2)
    worker_cores, other_cores = cores[-workers:], cores[:-workers] or cores
    pids = bench.stack.restart_workers(workers)
    for pid, core in zip(pids, worker_cores, strict=True):
        os.sched_setaffinity(pid, {core})
    stack = bench.stack
    for pid in (stack.redis.popen.pid, stack.llm.popen.pid, 0):
        os.sched_setaffinity(pid, set(other_cores))
    try:
        count, tokens = plan.pinned_streams_per_worker * workers, plan.pinned_tokens
        before = stack.worker_cpu_s()
        streams = await concurrently(
            count, lambda i: queued(bench.producer, request(tokens, tag=f"p{i}", on_clock=True), tokens)
        )
        cpu = stack.worker_cpu_s() - before
    finally:
        for pid in (stack.redis.popen.pid, stack.llm.popen.pid, 0):
            os.sched_setaffinity(pid, set(cores))
        bench.stack.restart_workers(1)
    _expect_tokens(streams, tokens)
    delivered = totals(streams)
    figures = {
        "cores": len(cores),
        "workers": workers,
        "worker_cores": worker_cores,
        "streams": count,
        "tokens_per_stream": tokens,
        "emulator": EMULATOR_CLOCK,
        "tokens_per_s": delivered.per_second,
        "tokens_per_s_per_worker_core": delivered.per_second / workers,
        "worker_core_busy": cpu / delivered.seconds / workers,
        "worker_cpu_us_per_token": cpu / delivered.tokens * 1e6,
    }
    return Outcome(figures, [])


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


Scenario = Callable[[Bench], Awaitable[Outcome]]
SCENARIOS: dict[str, Scenario] = {
    "emulator": emulator,
    "pickup": pickup,
    "ttft": ttft,
    "paced": paced,
    "flat_out": flat_out,
    "memory": memory,
    "scaling": scaling,
    "gateway": gateway,
    "agent_call": agent_call,
    "metrics": metrics,
    "gpu_pace": gpu_pace,
    "short_jobs": short_jobs,
    "pinned": pinned,
}
