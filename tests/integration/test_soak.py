"""Soak: hundreds of jobs on three workers while workers are SIGKILLed, Redis restarts (AOF on), and
Redis goes silent, every connection left open, for longer than `redis.dead_after_s`: once as after a
partition that heals but whose connections are lost for good (a NAT forgot them), once as a stall
after which the same connections carry on.

Every process reaches Redis through `tests.tcp_proxy`, which makes the silences. Every job must end with
exactly one terminal event, every completed job's text, rebuilt from its events as a subscriber would
(tokens since the last `reset`), must equal its stored result, readers that follow jobs through it all
must see the same events, and no process but the killed ones may need a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections import Counter
from pathlib import Path

from config_module.loader import load_config
from producer import Job, Producer, RedisUnavailable
from tests.servers import PersistentRedis, WorkerFleet, ark_env
from tests.streams import assert_one_end, text_of_last_attempt
from tests.tcp_proxy import ProxyProcess

JOBS = 300
WORKERS = 3
#: The blows, in order, a second or two apart.
CHAOS = ("kill", "partition", "kill", "restart", "kill", "stall", "kill")
#: Seconds of silence that make a connection dead: short, so that the silence outlasts it.
DEAD_AFTER_S = 2.0
#: How long Redis stays silent (every connection open, nothing answered).
STALL_S = 2.5 * DEAD_AFTER_S
#: Every this many jobs, a reader follows the job live from its enqueue, through the chaos.
FOLLOW_EVERY = 10


def prompt(index: int, rng: random.Random) -> tuple[str, str | None]:
    """A prompt and the error kind it must end with (None: it must complete)."""
    tokens = rng.randint(30, 70)
    roll = rng.random()
    if roll < 0.05:
        return f"job {index} [[arkq:status=400]]", "bad_request"
    if roll < 0.12:
        return f"job {index} [[arkq:stream_error=503 error_after=5 times=1 tokens={tokens} itl_ms=15]]", None
    if roll < 0.17:
        return f"job {index} [[arkq:status=503 times=1 tokens={tokens} itl_ms=15]]", None
    return f"job {index} [[arkq:tokens={tokens} itl_ms=15]]", None


async def chaos(
    fleet: WorkerFleet, redis: PersistentRedis, proxy: ProxyProcess, rng: random.Random, log: list[str]
) -> None:
    """The `CHAOS` blows: SIGKILL a random worker (and start a fresh one, as compose would), restart
    Redis, or make it silent for `STALL_S` without closing any connection, after which the connections
    open then carry on (`stall`) or never carry another byte (`partition`)."""
    for blow in CHAOS:
        await asyncio.sleep(rng.uniform(1.5, 2.5))  # fixed: the chaos's own pace, between two blows
        if blow == "restart":
            await asyncio.to_thread(redis.restart, 0.5)
            log.append("redis restarted")
            continue
        if blow in {"stall", "partition"}:
            await asyncio.to_thread(proxy.stall)
            await asyncio.sleep(STALL_S)  # fixed: the silence itself, which every client must notice
            if blow == "partition":
                await asyncio.to_thread(proxy.forget)
            await asyncio.to_thread(proxy.resume)
            log.append(f"redis silent for {STALL_S:g} s ({blow})")
            continue
        victim = rng.choice(fleet.alive())
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait()
        log.append(f"killed {victim.name}")
        await asyncio.to_thread(fleet.start, 1)


async def test_soak_kills_a_redis_restart_and_a_silent_redis_lose_no_job_and_no_token(
    aof_redis: PersistentRedis, fake_llm: str, log_dir: Path
) -> None:
    rng = random.Random(20261125)
    proxy = ProxyProcess(aof_redis.port)
    env = ark_env(
        proxy.url(),
        fake_llm,
        redis__dead_after_s=str(DEAD_AFTER_S),
        worker__lease_s="2",
        worker__lease_renew_s="0.2",
        worker__max_jobs="32",
        worker__max_tries="8",
        llm__backoff_base_s="0.1",
    )
    fleet = WorkerFleet(log_dir / "soak", env)
    fleet.log_dir.mkdir(parents=True, exist_ok=True)
    chaos_log: list[str] = []
    started = time.monotonic()
    try:
        fleet.start(WORKERS)
        # An enqueue that meets the silence fails after connect_timeout_s; the caller tries again with
        # the same job ID (the documented way: the same ID runs once).
        config = load_config(
            {"ARK_REDIS__DEAD_AFTER_S": str(DEAD_AFTER_S), "ARK_REDIS__CONNECT_TIMEOUT_S": "2"}
        )
        async with Producer(proxy.url(), config=config) as producer:
            planned = [prompt(index, rng) for index in range(JOBS)]
            jobs: list[Job] = []
            followers: dict[int, asyncio.Task[list]] = {}
            enqueue_failures = 0
            chaos_task = asyncio.create_task(chaos(fleet, aof_redis, proxy, rng, chaos_log))
            for index, (text, _) in enumerate(planned):
                while True:
                    try:
                        job = await producer.enqueue(
                            [{"role": "user", "content": text}], job_id=f"soak-{index}"
                        )
                        break
                    except RedisUnavailable:
                        enqueue_failures += 1
                jobs.append(job)
                if index % FOLLOW_EVERY == 0:
                    followers[index] = asyncio.create_task(follow(job))
                await asyncio.sleep(0.02)  # fixed: a steady stream of work while the chaos goes on
            await chaos_task
            sequences = await asyncio.wait_for(asyncio.gather(*(collect(job) for job in jobs)), timeout=240)
            followed = await asyncio.wait_for(asyncio.gather(*followers.values()), timeout=60)
            for index, events in zip(followers, followed, strict=True):
                assert events == sequences[index], f"the live reader of {jobs[index].id} saw what the log has"
            outcomes: Counter[str] = Counter()
            retried = retried_by_chaos = 0
            for job, (text, expected_error), events in zip(jobs, planned, sequences, strict=True):
                assert_one_end(events)
                result = await job.fetch_result()
                assert result is not None and result.status == events[-1].type
                attempts = sum(event.type == "started" for event in events)
                retried += attempts > 1
                retried_by_chaos += attempts > 1 and "stream_error" not in text
                if expected_error is None:
                    assert events[-1].type == "done", (job.id, events[-1])
                    assert text_of_last_attempt(events) == result.text == events[-1].text, job.id
                    outcomes["completed"] += 1
                else:
                    assert events[-1].type == "error" and events[-1].kind == expected_error, job.id
                    outcomes[f"failed ({events[-1].kind})"] += 1
        print(
            f"\nsoak: {JOBS} jobs on {WORKERS} workers in {time.monotonic() - started:.1f} s; "
            f"{', '.join(chaos_log)}; {dict(outcomes)}; retried (more than one attempt): {retried}; "
            f"enqueues tried again: {enqueue_failures}"
        )
        assert outcomes["completed"] + sum(v for k, v in outcomes.items() if k != "completed") == JOBS
        assert retried_by_chaos > 0, "the kills hit running jobs"
        assert enqueue_failures > 0, "the silence hit the producer: its enqueue failed in time"
        assert len(fleet.alive()) == WORKERS, (
            "no worker died but those killed (the Redis restart and the silence included)"
        )
        assert proxy.popen.poll() is None
    except BaseException:
        print(fleet.logs()[-20000:])
        raise
    finally:
        fleet.stop()
        proxy.stop()


async def collect(job: Job) -> list:
    """Every event of the job, read from the start once the chaos is over. A first look that meets a
    pooled connection the partition left dead fails within connect_timeout_s, as documented; a caller
    reads again, on a fresh connection."""
    for _ in range(2):
        with contextlib.suppress(RedisUnavailable):
            return [event async for event in job.events()]
    return [event async for event in job.events()]


async def follow(job: Job) -> list:
    """`collect`, by a reader that starts as the job is enqueued: if Redis fails its first look (the
    job's existence, bounded by connect_timeout_s), it starts again; once it has events it must ride
    out whatever comes."""
    while True:
        events: list = []
        try:
            async for event in job.events():
                events.append(event)
            return events
        except RedisUnavailable:
            if events:
                raise
