"""Picking jobs: queued ones behind any number of running ones, in queue order, never a running one."""

from __future__ import annotations

import asyncio
import time

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, func
from redis.exceptions import ConnectionError

from arkq.backoff import Backoff
from arkq.keys import claim_key
from worker import arq_patches
from worker.arq_patches import pick_jobs, poll_round

QUEUE = "arq:queue"


async def queue_jobs(redis: ArqRedis, ids: list[str], *, running: set[str], due_in_ms: int = 0) -> None:
    base = int(time.time() * 1000) - 60_000 + due_in_ms
    for position, job_id in enumerate(ids):
        await redis.zadd(QUEUE, {job_id: base + position})
        if job_id in running:
            await redis.set(claim_key(job_id), "leased")


async def test_queued_jobs_behind_more_running_jobs_than_arqs_read_limit_are_found(
    fake_redis: ArqRedis,
) -> None:
    running = [f"running-{i}" for i in range(700)]  # arq reads 320 IDs at max_jobs=64
    await queue_jobs(fake_redis, [*running, "new-1", "new-2", "new-3"], running=set(running))
    assert await pick_jobs(fake_redis, QUEUE, 2) == [b"new-1", b"new-2"]


async def test_nothing_running_or_not_yet_due_is_picked(fake_redis: ArqRedis) -> None:
    await queue_jobs(fake_redis, ["a", "b", "c"], running={"b"})
    await queue_jobs(fake_redis, ["later"], running=set(), due_in_ms=120_000)  # deferred a minute ahead
    assert await pick_jobs(fake_redis, QUEUE, 10) == [b"a", b"c"]
    assert await pick_jobs(fake_redis, "arq:empty", 10) == []


async def noop(ctx: dict) -> int:
    return 1


def arkq_worker(redis: ArqRedis) -> Worker:
    """An arq worker with arkq's poll round, two job slots, and one trivial function."""
    return Worker(
        functions=[func(noop, name="noop")],
        redis_pool=redis,
        max_jobs=2,
        handle_signals=False,
        ctx={arq_patches.ARKQ_WORKER: True},
    )


async def test_a_poll_round_that_redis_fails_gives_back_the_slot_it_was_filling(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arq_patches, "REDIS_BACKOFF", Backoff(0.0, 0.0))
    worker = arkq_worker(fake_redis)
    await fake_redis.enqueue_job("noop")
    pipeline, failing = fake_redis.pipeline, True

    def claim_pipeline(*args: object, **kwargs: object):  # Redis goes away while a job is being claimed
        pipe = pipeline(*args, **kwargs)
        if failing:

            async def watch(*keys: object) -> None:
                raise ConnectionError("Redis is restarting")

            pipe.watch = watch
        return pipe

    monkeypatch.setattr(fake_redis, "pipeline", claim_pipeline)
    for _ in range(3):
        await poll_round(worker)
    assert worker.job_counter == 0
    failing = False
    await poll_round(worker)
    assert worker.job_counter == 1 and len(worker.tasks) == 1  # Redis is back: the job is taken
    await asyncio.gather(*worker.tasks.values())


async def test_a_job_this_worker_still_winds_down_is_not_started_beside_itself(fake_redis: ArqRedis) -> None:
    worker = arkq_worker(fake_redis)
    job = await fake_redis.enqueue_job("noop")
    assert job is not None
    winding_down = asyncio.get_running_loop().create_future()  # its lease lost, its run not yet over
    worker.tasks[job.job_id] = asyncio.ensure_future(winding_down)
    await poll_round(worker)
    assert worker.job_counter == 0 and worker.tasks[job.job_id] is not None
    assert not worker.tasks[job.job_id].done()  # the old run is untouched, no second one took its key
    winding_down.set_result(None)
    await worker.tasks.pop(job.job_id)
    await poll_round(worker)
    assert worker.job_counter == 1  # once it has ended, the job is taken again
    await asyncio.gather(*worker.tasks.values())
