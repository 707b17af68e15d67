"""Enqueueing a job in one atomic step: the duplicate check, the depth limit, arq's job and the wake-up.

arq's own `enqueue_job` checks for duplicates with WATCH and cannot bound the queue: a separate depth
check lets concurrent producers overshoot `queue.max_depth`, and a connection lost mid-transaction
reads as "already there". One script does all of it, and retrying it after a lost reply is harmless.
"""

from __future__ import annotations

import time
from typing import Any

from arq.constants import expires_extra_ms, job_key_prefix
from arq.constants import result_key_prefix as arq_result_key_prefix
from arq.jobs import serialize_job
from redis.asyncio import Redis

from arkq.contract import JOB_FUNCTION, event_log_key, result_key, serialize, wake_channel

# KEYS: arq job, arq result, arkq event log, arkq result, queue.
# ARGV: job id, job bytes, job key TTL (ms), max depth, wake channel, score.
# Returns 1 (enqueued), 0 (the job exists or existed: not enqueued again), or -1 - depth (queue full).
_ENQUEUE = """
if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3], KEYS[4]) > 0 then return 0 end
local depth = redis.call('ZCARD', KEYS[5])
if depth >= tonumber(ARGV[4]) then return -1 - depth end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[5], ARGV[6], ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1])
return 1
"""


class QueueAtCapacity(Exception):
    def __init__(self, depth: int):
        super().__init__(depth)
        self.depth = depth


async def enqueue_generation(
    redis: Redis, job_id: str, payload: dict[str, Any], *, queue_name: str, max_depth: int
) -> bool:
    """Enqueue `payload` as arq job `job_id`; False if that job exists or existed (idempotent).
    Raises QueueAtCapacity, writing nothing, when `max_depth` jobs are queued or running."""
    now_ms = int(time.time() * 1000)
    job = serialize_job(JOB_FUNCTION, (payload,), {}, None, now_ms, serializer=serialize)
    keys = [
        job_key_prefix + job_id,
        arq_result_key_prefix + job_id,
        event_log_key(job_id),
        result_key(job_id),
        queue_name,
    ]
    args = [job_id, job, expires_extra_ms, max_depth, wake_channel(queue_name), now_ms]
    outcome = int(await redis.register_script(_ENQUEUE)(keys=keys, args=args))
    if outcome < 0:
        raise QueueAtCapacity(-1 - outcome)
    return outcome == 1
