"""Enqueueing a job in one atomic step: the duplicate check, the depth limit, arq's job and the wake-up.

arq's own `enqueue_job` checks for duplicates with WATCH and cannot bound the queue: a separate depth
check lets concurrent producers overshoot `queue.max_depth`, and a connection lost mid-transaction
reads as "already there". One script (`enqueue.lua`) does all of it, and retrying it after a lost reply
is harmless.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from arkq import scripts
from arkq.envelope import encode_job
from arkq.errors import JobIdInUse, QueueFull, TenantLimitReached
from arkq.keys import (
    ARQ_JOB_EXPIRES_EXTRA_MS,
    ARQ_JOB_PREFIX,
    active_jobs_key,
    arq_job_key,
    arq_result_key,
    event_log_key,
    owner_key,
    pick_cursor_key,
    request_digest_key,
    result_key,
    wake_channel,
)


@dataclass(frozen=True)
class Owner:
    """The tenant a job is enqueued for, and how many of its jobs may be queued or running at once
    (0: no limit). `ttl_ms` keeps the record of who owns the job as long as anything of the job."""

    tenant: str
    max_active: int
    ttl_ms: int


async def enqueue_generation(
    redis: Redis,
    job_id: str,
    payload: dict[str, Any],
    *,
    queue_name: str,
    max_depth: int,
    owner: Owner | None = None,
    keep_ms: int = ARQ_JOB_EXPIRES_EXTRA_MS,
) -> bool:
    """Enqueue `payload` as arq job `job_id`; False if that job exists or existed with the same payload
    (idempotent). Raises JobIdInUse when it exists with another payload, and QueueFull
    (TenantLimitReached for an owner at its limit) when `max_depth` jobs are queued or running, having
    written nothing. The payload's digest is kept `keep_ms` (as long as anything of the job)."""
    now_ms = int(time.time() * 1000)
    tenant = owner.tenant if owner is not None else ""
    keys = [
        arq_job_key(job_id),
        arq_result_key(job_id),
        event_log_key(job_id),
        result_key(job_id),
        queue_name,
        owner_key(job_id),
        active_jobs_key(tenant),
        request_digest_key(job_id),
        pick_cursor_key(queue_name),
    ]
    job = encode_job(payload, enqueued_ms=now_ms)
    args = [
        job_id,
        job,
        ARQ_JOB_EXPIRES_EXTRA_MS,
        max_depth,
        wake_channel(queue_name),
        now_ms,
        tenant,
        owner.max_active if owner is not None else 0,
        owner.ttl_ms if owner is not None else 0,
        ARQ_JOB_PREFIX,
        request_digest(payload),
        keep_ms,
    ]
    outcome, count = (int(n) for n in await scripts.ENQUEUE(redis, keys=keys, args=args))
    if outcome == -3:
        raise JobIdInUse(job_id)
    if outcome == -1:
        raise QueueFull(
            f"{count} jobs are queued or running, queue.max_depth={max_depth}: "
            "nothing was enqueued; retry later or add workers",
            depth=count,
        )
    if outcome == -2 and owner is not None:
        raise TenantLimitReached(
            f"{owner.tenant!r} has {count} jobs queued or running, its limit is {owner.max_active}: "
            "nothing was enqueued; retry when one ends",
            tenant=owner.tenant,
            depth=count,
        )
    return outcome == 1


def request_digest(payload: dict[str, Any]) -> str:
    """The digest that tells one request from another: SHA-256 of its canonical JSON."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
