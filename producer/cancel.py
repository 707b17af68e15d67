"""Cancelling a job: a queued one never runs, a running one is stopped by its worker (`cancel.lua`)."""

from __future__ import annotations

import time
from typing import Literal, cast

from redis.asyncio import Redis

from arkq import scripts
from arkq.contract import CancelledEvent, JobResult, Timings, event_template
from arkq.envelope import enqueued_ms
from arkq.keys import (
    arq_job_key,
    cancel_key,
    cancels_channel,
    claim_key,
    event_channel,
    event_log_key,
    lease_key,
    result_key,
)
from config_module.settings import ArkConfig

CancelOutcome = Literal["cancelled", "cancelling", "ended", "unknown"]


async def cancel_job(redis: Redis, job_id: str, config: ArkConfig) -> CancelOutcome:
    """`cancelled`: it was queued and will never run; `cancelling`: it is running and its worker stops
    it at once (told on the queue's cancels channel; within `worker.lease_renew_s`, had it missed
    that); `ended`: too late, it had ended; `unknown`: no such job."""
    now = time.time()
    enqueued = enqueued_ms(await redis.get(arq_job_key(job_id)))
    enqueued_at = now if enqueued is None else enqueued / 1000
    result = JobResult(
        job_id=job_id,
        status="cancelled",
        attempts=0,
        timings=Timings(enqueued_at=enqueued_at, started_at=now, finished_at=now),
    )
    prefix, suffix = event_template(CancelledEvent(job_id=job_id, seq=0))
    keys = [
        cancel_key(job_id),
        lease_key(job_id),
        result_key(job_id),
        config.queue.name,
        arq_job_key(job_id),
        event_log_key(job_id),
        claim_key(job_id),
    ]
    args = [
        job_id,
        event_channel(config.streaming.channel_prefix, job_id),
        int(config.worker.keep_result_s * 1000),
        int(config.streaming.replay_ttl_s * 1000),
        prefix,
        suffix,
        result.model_dump_json(),
        cancels_channel(config.queue.name),
    ]
    outcome = await scripts.CANCEL(redis, keys=keys, args=args)
    decoded = outcome.decode() if isinstance(outcome, bytes) else outcome
    assert decoded in {"cancelled", "cancelling", "ended", "unknown"}, decoded
    return cast(CancelOutcome, decoded)
