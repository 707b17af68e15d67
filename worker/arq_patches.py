"""The two places where arkq extends arq's worker loop itself (arq 0.28 has no hooks for them).

- Its wait between polls becomes wakeable (`worker.wakeup`), for millisecond pickup.
- Its poll round (`Worker._poll_iteration`) is arkq's own, for two reasons:
  - Picking jobs. arq keeps a running job in the queue until it ends, reads a fixed number of IDs
    from the queue's head (`queue_read_limit`) and checks each with three round trips: with more jobs
    running across the fleet than that limit, a worker with free slots sees only running jobs and
    new ones wait; below it, each poll still pays for every running job ahead of the first queued
    one. arkq asks Redis once for up to as many queued, unclaimed jobs as the worker has free slots.
  - A Redis error inside one round (a restart: arq's claim watches a key outside its own error
    handling, and a failed job task re-raises there) costs that round, not the worker process: the
    next round retries. Jobs are not lost meanwhile: they stay queued, and their leases lapse and move.
Everything else in the round is arq's own steps, called as arq calls them.
"""

from __future__ import annotations

import asyncio
import logging

import arq.worker
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq.contract import IN_PROGRESS_PREFIX
from worker import wakeup

logger = logging.getLogger("arkq.worker")

#: The pause after a poll round that Redis failed, so a down Redis is not hammered.
FAILED_ROUND_PAUSE_S = 0.5
#: Queue entries one pick looks at, at most: far more than a fleet runs at once.
PICK_SCAN_LIMIT = 10_000

# KEYS[1]: the queue. ARGV: now (ms), how many jobs are wanted, the claim key prefix, the scan limit.
# Due jobs in queue order whose claim key does not exist: the ones no worker is running.
_PICK = """
local wanted, limit = tonumber(ARGV[2]), tonumber(ARGV[4])
local found, offset, page = {}, 0, 256
while offset < limit do
  local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', offset, page)
  for _, id in ipairs(ids) do
    if redis.call('EXISTS', ARGV[3] .. id) == 0 then
      found[#found + 1] = id
      if #found >= wanted then return found end
    end
  end
  if #ids < page then return found end
  offset = offset + page
end
return found
"""

_installed = False


async def pick_jobs(redis: Redis, queue_name: str, wanted: int) -> list[bytes]:
    """Up to `wanted` IDs of due jobs that no worker holds, oldest first."""
    now_ms = arq.worker.timestamp_ms()
    script = redis.register_script(_PICK)
    return await script(keys=[queue_name], args=[now_ms, wanted, IN_PROGRESS_PREFIX, PICK_SCAN_LIMIT])


async def poll_round(worker: arq.worker.Worker) -> None:
    """arq's poll round with arkq's pick: start what fits, handle aborts, reap tasks, heartbeat."""
    try:
        free = worker.max_jobs - worker.job_counter
        if worker.burst and worker.max_burst_jobs >= 0:
            free = min(free, worker.max_burst_jobs - worker._jobs_started())
        if worker.allow_pick_jobs and free > 0:
            await _start_jobs(worker, await pick_jobs(worker.pool, worker.queue_name, free))
        if worker.allow_abort_jobs:
            await worker._cancel_aborted_jobs()
        for job_id, task in list(worker.tasks.items()):
            if task.done():
                del worker.tasks[job_id]
                task.result()  # as arq does: an error in its own job runner surfaces here
        await worker.heart_beat()
    except RedisError as error:
        logger.warning("poll round failed on Redis (%s); trying again", error)
        await asyncio.sleep(FAILED_ROUND_PAUSE_S)


async def _start_jobs(worker: arq.worker.Worker, job_ids: list[bytes]) -> None:
    """arq's `start_jobs`, minus a leak: arq counts the job it is claiming, and takes its slot, before
    its claim's round trips; a Redis error there (which would have ended the process) left both taken
    for good, and after a few such rounds the worker would never take a job again."""
    try:
        await worker.start_jobs(job_ids)
    except RedisError:
        worker.job_counter -= 1
        worker.sem.release()
        raise


def install() -> None:
    global _installed
    if _installed:
        return
    arq.worker.poll = wakeup.wakeable_poll  # type: ignore[attr-defined]
    arq.worker.Worker._poll_iteration = poll_round  # type: ignore[method-assign, assignment]
    _installed = True
