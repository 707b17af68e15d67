"""Enqueueing a job in one atomic step: the duplicate check, the depth limit, arq's job and the wake-up.

arq's own `enqueue_job` checks for duplicates with WATCH and cannot bound the queue: a separate depth
check lets concurrent producers overshoot `queue.max_depth`, and a connection lost mid-transaction
reads as "already there". One script (`enqueue.lua`) does all of it, and retrying it after a lost reply
is harmless.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from arkq import scripts
from arkq.envelope import encode_job
from arkq.errors import QueueFull
from arkq.keys import (
    ARQ_JOB_EXPIRES_EXTRA_MS,
    arq_job_key,
    arq_result_key,
    event_log_key,
    result_key,
    wake_channel,
)


async def enqueue_generation(
    redis: Redis, job_id: str, payload: dict[str, Any], *, queue_name: str, max_depth: int
) -> bool:
    """Enqueue `payload` as arq job `job_id`; False if that job exists or existed (idempotent).
    Raises QueueFull, writing nothing, when `max_depth` jobs are queued or running."""
    now_ms = int(time.time() * 1000)
    keys = [
        arq_job_key(job_id),
        arq_result_key(job_id),
        event_log_key(job_id),
        result_key(job_id),
        queue_name,
    ]
    job = encode_job(payload, enqueued_ms=now_ms)
    args = [job_id, job, ARQ_JOB_EXPIRES_EXTRA_MS, max_depth, wake_channel(queue_name), now_ms]
    outcome = int(await scripts.ENQUEUE(redis, keys=keys, args=args))
    if outcome < 0:
        depth = -1 - outcome
        raise QueueFull(
            f"{depth} jobs are queued or running, queue.max_depth={max_depth}: "
            "nothing was enqueued; retry later or add workers",
            depth=depth,
        )
    return outcome == 1
