"""Cancelling a job: a queued one never runs, a running one is stopped by its worker."""

from __future__ import annotations

import time
from typing import Literal

from arq.constants import job_key_prefix
from redis.asyncio import Redis

from arkq.contract import (
    CancelledEvent,
    JobResult,
    Timings,
    cancel_key,
    channel_name,
    claim_key,
    deserialize,
    event_log_key,
    event_template,
    lease_key,
    result_key,
)
from config_module.settings import ArkConfig

CancelOutcome = Literal["cancelled", "cancelling", "ended", "unknown"]

# KEYS: cancel flag, lease, result, queue, arq job, event log, arq's claim.
# ARGV: job id, channel, keep ms, log TTL ms, event prefix, event suffix, result JSON.
# The flag is always set (a running job's worker sees it at its next lease renewal). A job still in the
# queue and not running is removed from it and ended here, atomically, so no worker can start it.
_CANCEL = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 'ended' end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[3])
if redis.call('EXISTS', KEYS[2], KEYS[7]) > 0 then return 'cancelling' end
if not redis.call('ZSCORE', KEYS[4], ARGV[1]) then
  redis.call('DEL', KEYS[1])
  return 'unknown'
end
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('DEL', KEYS[5])
local event = ARGV[5] .. redis.call('LLEN', KEYS[6]) .. ARGV[6]
redis.call('RPUSH', KEYS[6], event)
redis.call('PEXPIRE', KEYS[6], ARGV[4])
redis.call('PUBLISH', ARGV[2], event)
redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[3])
return 'cancelled'
"""


async def cancel_job(redis: Redis, job_id: str, config: ArkConfig) -> CancelOutcome:
    """`cancelled`: it was queued and will never run; `cancelling`: it is running and its worker stops
    it within `worker.lease_renew_s`; `ended`: too late, it had ended; `unknown`: no such job."""
    now = time.time()
    raw_job = await redis.get(job_key_prefix + job_id)
    enqueued_at = deserialize(raw_job)["et"] / 1000 if raw_job else now
    result = JobResult(
        job_id=job_id,
        status="cancelled",
        attempts=0,
        timings=Timings(enqueued_at=enqueued_at, started_at=now, finished_at=now),
    )
    prefix, suffix = event_template(CancelledEvent(job_id=job_id, seq=0))
    script = redis.register_script(_CANCEL)
    keys = [
        cancel_key(job_id),
        lease_key(job_id),
        result_key(job_id),
        config.queue.name,
        job_key_prefix + job_id,
        event_log_key(job_id),
        claim_key(job_id),
    ]
    args = [
        job_id,
        channel_name(config.streaming.channel_prefix, job_id),
        int(config.worker.keep_result_s * 1000),
        int(config.streaming.replay_ttl_s * 1000),
        prefix,
        suffix,
        result.model_dump_json(),
    ]
    outcome = await script(keys=keys, args=args)
    return outcome.decode() if isinstance(outcome, bytes) else outcome
