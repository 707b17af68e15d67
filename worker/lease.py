"""Leases: a running job's claim that its worker keeps renewing, so a dead worker's job moves on fast.

arq claims a job by setting `arq:in-progress:<id>` for the job timeout plus 10 s: a worker killed with
SIGKILL keeps its jobs locked that long. arkq keeps that claim short instead: as a job starts, its
worker takes the job's lease (`ark:lease:<id>`, its own token, `worker.lease_s`) and rewrites arq's
claim with the same short TTL; one task per worker renews both for all its jobs every
`worker.lease_renew_s`. When a worker dies, both lapse within `lease_s` and arq's ordinary polling
hands the job to another worker.

The lease is arkq's alone (arq deletes its claim key whenever an attempt ends, even a stale one), and it
fences the event stream: only the holder can publish, so one job never has two live attempts. A worker
that finds the lease held by another attempt defers the job instead of running it.

The renewal round trip also looks for cancel requests, so a running job learns of its cancellation
within one renewal interval. And every `worker.lease_s` each worker reaps arq claims that were never
turned into a lease (the key still holds arq's `1` long after it was set: its worker died in the
milliseconds between claim and lease), so that job is claimed again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq.contract import cancel_key, claim_key, lease_key

logger = logging.getLogger("arkq.worker")

# KEYS[1]: lease, KEYS[2]: arq's claim. ARGV: token, TTL (ms). 1 if taken, 0 if another attempt holds it.
# While the job runs, arq's claim holds 'leased' (not arq's '1'), which the reaper leaves alone.
_ACQUIRE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], 'leased', 'PX', ARGV[2])
return 1
"""

# KEYS: per job a lease, arq's claim and the cancel flag. ARGV[1]: TTL (ms), then the tokens.
# Per job: 1 renewed, 0 lost (the lease holds another token or is gone), 2 renewed but cancel requested.
_RENEW = """
local states = {}
for i = 1, #ARGV - 1 do
  local base = (i - 1) * 3
  if redis.call('GET', KEYS[base + 1]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[base + 1], ARGV[1])
    redis.call('SET', KEYS[base + 2], 'leased', 'PX', ARGV[1])
    states[i] = redis.call('EXISTS', KEYS[base + 3]) == 1 and 2 or 1
  else
    states[i] = 0
  end
end
return states
"""

# KEYS[1]: lease. ARGV[1]: token. Deletes the lease only if it is still ours.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1]: the queue. ARGV: now (ms), scan limit, arq's claim TTL (ms), age (ms) of a claim that should
# have become a lease long ago. Returns how many dead claims were removed.
_REAP = """
local reaped = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])) do
  local key = 'arq:in-progress:' .. id
  if redis.call('GET', key) == '1' then
    local ttl = redis.call('PTTL', key)
    if ttl > 0 and ttl < tonumber(ARGV[3]) - tonumber(ARGV[4]) then
      redis.call('DEL', key)
      reaped = reaped + 1
    end
  end
end
return reaped
"""
#: Queue entries a reaping round looks at.
REAP_SCAN_LIMIT = 2000


class Stop(enum.Enum):
    """Why the worker stopped a job's work from outside."""

    CANCELLED = "cancelled"
    LEASE_LOST = "lease lost"


@dataclass
class Lease:
    job_id: str
    token: str
    #: The task doing the job's work; cancelled when the job is cancelled or the lease is lost.
    work: asyncio.Task[object] | None = None
    stop: Stop | None = field(default=None)

    def halt(self, reason: Stop) -> None:
        if self.stop is None:
            self.stop = reason
            if self.work is not None:
                self.work.cancel()


class LeaseKeeper:
    def __init__(self, redis: Redis, *, lease_s: float, renew_s: float, queue_name: str, claim_ttl_s: float):
        self._redis = redis
        self._ttl_ms = int(lease_s * 1000)
        self._renew_s = renew_s
        self._queue_name = queue_name
        self._claim_ttl_ms = int(claim_ttl_s * 1000)
        self._leases: dict[str, Lease] = {}
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._reap = redis.register_script(_REAP)
        self._task: asyncio.Task[None] | None = None

    async def acquire(self, job_id: str) -> Lease | None:
        """Take the job's lease; None if another attempt holds it (that attempt is alive)."""
        token = uuid.uuid4().hex
        taken = await self._acquire(keys=[lease_key(job_id), claim_key(job_id)], args=[token, self._ttl_ms])
        if not taken:
            return None
        lease = Lease(job_id, token)
        self._leases[job_id] = lease
        return lease

    @asynccontextmanager
    async def holding(self, lease: Lease) -> AsyncIterator[Lease]:
        """Renew the lease while the block runs, then give it up, so the next attempt (after a
        shutdown, say) can take it at once instead of waiting for it to lapse."""
        try:
            yield lease
        finally:
            if self._leases.get(lease.job_id) is lease:
                del self._leases[lease.job_id]
            with suppress(RedisError):  # Redis away: the lease lapses by itself
                await asyncio.shield(self._release(keys=[lease_key(lease.job_id)], args=[lease.token]))

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_renewing(), name="arkq-lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def renew_once(self) -> None:
        leases = list(self._leases.values())
        if not leases:
            return
        keys = []
        for lease in leases:
            keys += [lease_key(lease.job_id), claim_key(lease.job_id), cancel_key(lease.job_id)]
        states = await self._renew(keys=keys, args=[self._ttl_ms, *(lease.token for lease in leases)])
        for lease, state in zip(leases, states, strict=True):
            if state == 0:
                logger.warning("job %s: lease lost; stopping this attempt", lease.job_id)
                lease.halt(Stop.LEASE_LOST)
            elif state == 2:
                lease.halt(Stop.CANCELLED)

    async def reap_once(self) -> int:
        """Remove arq claims whose worker died before it turned them into a lease."""
        now_ms = int(time.time() * 1000)
        args = [now_ms, REAP_SCAN_LIMIT, self._claim_ttl_ms, self._ttl_ms]
        reaped = await self._reap(keys=[self._queue_name], args=args)
        if reaped:
            logger.warning("released %d job(s) claimed by a worker that died before starting them", reaped)
        return reaped

    async def _keep_renewing(self) -> None:
        rounds_per_reap = max(1, round(self._ttl_ms / 1000 / self._renew_s))
        rounds = 0
        while True:
            await asyncio.sleep(self._renew_s)
            rounds += 1
            try:
                await self.renew_once()
                if rounds % rounds_per_reap == 0:
                    await self.reap_once()
            except RedisError as error:  # the connection retries on its own; try again next round
                logger.warning("lease renewal failed: %s", error)
            except Exception:  # never let the keeper die: every running job would lose its lease
                logger.exception("lease renewal failed unexpectedly")
