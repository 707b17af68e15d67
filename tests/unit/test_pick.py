"""Picking jobs: queued ones behind any number of running ones, in queue order, never a running one."""

from __future__ import annotations

import time

from arq.connections import ArqRedis

from arkq.contract import claim_key
from worker.arq_patches import pick_jobs

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
