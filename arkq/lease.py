"""The lease: a running job's claim that its worker keeps renewing, so a dead worker's job moves on fast.

Everything about it is here: taking it (`LeaseKeeper.acquire`), renewing it, giving it up, losing it
(`LeaseLost`), reaping arq claims that never became one, asking whether a job is held (`is_held`), and
what the fence in the publish script means (`FENCE_REFUSALS`).

arq claims a job by setting `arq:in-progress:<id>` for the job timeout plus 10 s: a worker killed with
SIGKILL keeps its jobs locked that long. arkq keeps that claim short instead: as a job starts, its
worker takes the job's lease (`ark:lease:<id>`, its own token, `worker.lease_s`) and rewrites arq's
claim with the same short TTL; one task per worker looks at all its leases every
`worker.lease_renew_s`, in one round trip, and extends those (and their claims) about a third of whose
TTL has passed. When a worker dies, both lapse within `lease_s` and arq's ordinary polling hands the
job to another worker.

The lease is arkq's alone (arq deletes its claim key whenever an attempt ends, even a stale one), and it
fences the event stream: the publish script (`publish.lua`) appends a job's events, and stores its
result, only for the attempt whose token the lease holds, so one job never has two live attempts. A
refused write reaches the attempt as `LeaseLost`, and it stops. A worker that finds the lease held by
another attempt defers the job instead of running it.

A cancel reaches a running job's worker at once, announced on the queue's cancels channel
(`worker.wakeup` listens, `cancel_requested` stops the job); every renewal round also looks at the
cancel flags, for a worker that missed the message: within `worker.lease_renew_s` then, as before.
And every `worker.lease_s` each worker reaps arq claims that were never turned into a lease (the key
still holds arq's `1` long after it was set: its worker died in the milliseconds between claim and
lease), so that job is claimed again.
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

from arkq import scripts
from arkq.errors import LeaseLost
from arkq.keys import ARQ_CLAIM_PREFIX, arq_job_key, cancel_key, claim_key, event_log_key, lease_key

logger = logging.getLogger("arkq.worker")

#: Queue entries a reaping round looks at.
REAP_SCAN_LIMIT = 2000

#: What the publish script's fence answers for a job whose write it refused, and what that means.
FENCE_REFUSALS = {
    -1: "the lease is held by another attempt",
    -2: "its log has events this attempt did not write",
}


def refused(job_id: str, code: int) -> LeaseLost:
    """The error for a write the fence refused (`code` from `FENCE_REFUSALS`)."""
    return LeaseLost(f"job {job_id}: {FENCE_REFUSALS[code]}")


async def is_held(redis: Redis, job_id: str) -> bool:
    """Whether the job is queued or running: its arq envelope, its lease or arq's claim exists. A job
    that is none of these will never publish again."""
    return bool(await redis.exists(arq_job_key(job_id), lease_key(job_id), claim_key(job_id)))


class Stop(enum.Enum):
    """Why the worker stopped a job's work from outside."""

    CANCELLED = "cancelled"
    LEASE_LOST = "lease lost"


@dataclass
class Lease:
    job_id: str
    token: str
    #: What the job was when the lease was taken: its replay log (earlier attempts' events, raw), and
    #: whether a cancel had been asked for. Read with the lease, so an attempt starts in one round trip.
    log: list[bytes] = field(default_factory=list)
    cancelled: bool = False
    #: The task doing the job's work; cancelled when the job is cancelled or the lease is lost.
    work: asyncio.Task[object] | None = None
    stop: Stop | None = field(default=None)
    #: The job's ending write gave the lease up with it (`publish.lua`): nothing is left to renew or
    #: release.
    given_up: bool = False
    #: When the lease's TTL was last set (monotonic seconds): taken, or extended by a renewal.
    extended_at: float = field(default_factory=time.monotonic)

    def give_up(self) -> None:
        """The job's ending write gave the lease up (`publish.lua`)."""
        self.given_up = True

    def halt(self, reason: Stop) -> None:
        if self.stop is None:
            self.stop = reason
            if self.work is not None:
                self.work.cancel()


class LeaseKeeper:
    """A worker's leases: taken as jobs start, renewed together, given up as they end."""

    def __init__(self, redis: Redis, *, lease_s: float, renew_s: float, queue_name: str, claim_ttl_s: float):
        self._redis = redis
        self._ttl_ms = int(lease_s * 1000)
        self._renew_s = renew_s
        self._queue_name = queue_name
        self._claim_ttl_ms = int(claim_ttl_s * 1000)
        self._leases: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None

    async def acquire(self, job_id: str) -> Lease | None:
        """Take the job's lease, with its log and whether it was cancelled; None if another attempt
        holds it (that attempt is alive)."""
        token = uuid.uuid4().hex
        keys = [lease_key(job_id), claim_key(job_id), event_log_key(job_id), cancel_key(job_id)]
        taken = await scripts.LEASE_ACQUIRE(self._redis, keys=keys, args=[token, self._ttl_ms])
        if not taken[0]:
            return None
        lease = Lease(job_id, token, log=taken[2:], cancelled=bool(taken[1]))
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
            if not lease.given_up:  # else the job's ending write gave it up already
                with suppress(RedisError):  # Redis away: the lease lapses by itself
                    await asyncio.shield(
                        scripts.LEASE_RELEASE(self._redis, keys=[lease_key(lease.job_id)], args=[lease.token])
                    )

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_renewing(), name="arkq-lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    def cancel_requested(self, job_id: str) -> None:
        """A cancel was announced for `job_id` (the queue's cancels channel): stop it if it runs here."""
        lease = self._leases.get(job_id)
        if lease is not None and not lease.given_up:
            lease.halt(Stop.CANCELLED)

    async def renew_once(self) -> None:
        """One round: every lease's cancel flag is looked at (a cancel whose message this worker missed,
        the announcement racing the lease's acquisition or the listener reconnecting, is found here),
        and the leases about a third of whose TTL has passed are checked (still ours?) and extended.
        Not every lease every round: a job shorter than that costs one command a round, not four,
        and a lease is extended with at least two thirds of `lease_s` left, so a round that comes a
        round late finds it alive. A lease lost meanwhile shows at the job's next publish (the fence)."""
        leases = [lease for lease in self._leases.values() if not lease.given_up]
        if not leases:
            return
        now = time.monotonic()
        extend_after_s = self._ttl_ms / 3000 - self._renew_s  # the next round may be that late
        keys: list[str] = []
        args: list[str | int] = [self._ttl_ms]
        extending: list[Lease] = []
        for lease in leases:
            keys += [lease_key(lease.job_id), claim_key(lease.job_id), cancel_key(lease.job_id)]
            due = now - lease.extended_at >= extend_after_s
            args += [lease.token, "1" if due else "0"]
            if due:
                extending.append(lease)
        states = await scripts.LEASE_RENEW(self._redis, keys=keys, args=args)
        for lease in extending:
            lease.extended_at = now
        for lease, state in zip(leases, states, strict=True):
            if lease.given_up:  # the job ended while the renewal was on its way
                continue
            if state == 0:
                logger.warning("job %s: lease lost; stopping this attempt", lease.job_id)
                lease.halt(Stop.LEASE_LOST)
            elif state == 2:
                lease.halt(Stop.CANCELLED)

    async def reap_once(self) -> int:
        """Remove arq claims whose worker died before it turned them into a lease."""
        now_ms = int(time.time() * 1000)
        args = [now_ms, REAP_SCAN_LIMIT, self._claim_ttl_ms, self._ttl_ms, ARQ_CLAIM_PREFIX]
        reaped: int = await scripts.LEASE_REAP(self._redis, keys=[self._queue_name], args=args)
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
