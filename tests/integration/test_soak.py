"""Soak: hundreds of jobs on three workers while workers are SIGKILLed and Redis restarts (AOF on).

Every job must end with exactly one terminal event, and every completed job's text, rebuilt from its
events as a subscriber would (tokens since the last `reset`), must equal its stored result.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from pathlib import Path

from producer import Job, Producer
from tests.servers import PersistentRedis, WorkerFleet, ark_env
from tests.streams import assert_one_end, text_of_last_attempt

JOBS = 300
WORKERS = 3
KILLS = 4


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


async def chaos(fleet: WorkerFleet, redis: PersistentRedis, rng: random.Random, log: list[str]) -> None:
    """SIGKILL a random worker now and then (and start a fresh one, as compose would), and restart
    Redis once, half-way."""
    for round_ in range(KILLS + 1):
        await asyncio.sleep(rng.uniform(1.5, 2.5))  # fixed: the chaos's own pace, between two blows
        if round_ == KILLS // 2:
            await asyncio.to_thread(redis.restart, 0.5)
            log.append("redis restarted")
            continue
        victim = rng.choice(fleet.alive())
        victim.popen.send_signal(signal.SIGKILL)
        victim.popen.wait()
        log.append(f"killed {victim.name}")
        await asyncio.to_thread(fleet.start, 1)


async def test_soak_kills_and_a_redis_restart_lose_no_job_and_no_token(
    aof_redis: PersistentRedis, fake_llm: str, log_dir: Path
) -> None:
    rng = random.Random(20261125)
    env = ark_env(
        aof_redis.url,
        fake_llm,
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
        async with Producer(aof_redis.url) as producer:
            planned = [prompt(index, rng) for index in range(JOBS)]
            jobs: list[Job] = []
            chaos_task = asyncio.create_task(chaos(fleet, aof_redis, rng, chaos_log))
            for text, _ in planned:
                jobs.append(await producer.enqueue([{"role": "user", "content": text}]))
                await asyncio.sleep(0.02)  # fixed: a steady stream of work while the chaos goes on
            await chaos_task
            sequences = await asyncio.wait_for(asyncio.gather(*(collect(job) for job in jobs)), timeout=240)
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
            f"{', '.join(chaos_log)}; {dict(outcomes)}; retried (more than one attempt): {retried}"
        )
        assert outcomes["completed"] + sum(v for k, v in outcomes.items() if k != "completed") == JOBS
        assert retried_by_chaos > 0, "the kills hit running jobs"
        assert len(fleet.alive()) == WORKERS, "no worker died but those killed (the Redis restart included)"
    except BaseException:
        print(fleet.logs()[-20000:])
        raise
    finally:
        fleet.stop()


async def collect(job: Job) -> list:
    return [event async for event in job.events()]
