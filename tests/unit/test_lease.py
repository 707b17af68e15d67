"""Leases on fakeredis: renewal, loss, cancellation and the reaping of dead claims."""

from __future__ import annotations

import asyncio
import time

from arq.connections import ArqRedis

from arkq.keys import cancel_key, claim_key, event_log_key, lease_key
from arkq.lease import Lease, LeaseKeeper, Stop

CLAIM_TTL_S = 310.0


def keeper(redis: ArqRedis) -> LeaseKeeper:
    return LeaseKeeper(redis, lease_s=6, renew_s=0.5, queue_name="arq:queue", claim_ttl_s=CLAIM_TTL_S)


async def claimed(redis: ArqRedis, job_id: str, age_s: float = 0) -> None:
    """As arq claims a job: queued, and its in-progress key set to 1 for the claim TTL."""
    await redis.zadd("arq:queue", {job_id: int(time.time() * 1000) - 1000})
    await redis.set(claim_key(job_id), b"1", px=int((CLAIM_TTL_S - age_s) * 1000))


async def test_acquire_takes_a_short_lease_and_shortens_arqs_claim(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    await claimed(fake_redis, "j")
    lease = await leases.acquire("j")
    assert lease is not None
    assert (await fake_redis.get(lease_key("j"))).decode() == lease.token
    assert 0 < await fake_redis.pttl(lease_key("j")) <= 6000
    assert 0 < await fake_redis.pttl(claim_key("j")) <= 6000, "a dead worker's claim lapses as fast"
    await fake_redis.pexpire(lease_key("j"), 3000)
    await fake_redis.delete(claim_key("j"))  # arq deleted it, finishing a stale attempt
    await leases.renew_once()
    # Taken just now: left alone (a third of its TTL has not passed).
    assert 0 < await fake_redis.pttl(lease_key("j")) <= 3000
    assert await fake_redis.get(claim_key("j")) is None
    lease.extended_at -= 2.0  # stands for two seconds gone by
    await leases.renew_once()
    assert await fake_redis.pttl(lease_key("j")) > 3000
    assert await fake_redis.get(claim_key("j")) == b"leased", "renewal restores the claim"
    assert lease.stop is None
    await fake_redis.pexpire(lease_key("j"), 3000)
    await leases.renew_once()
    assert await fake_redis.pttl(lease_key("j")) <= 3000, "not extended again within a third of its TTL"


async def test_a_live_lease_cannot_be_taken_twice(fake_redis: ArqRedis) -> None:
    await claimed(fake_redis, "j")
    assert await keeper(fake_redis).acquire("j") is not None
    assert await keeper(fake_redis).acquire("j") is None


async def test_a_lease_taken_over_stops_the_work(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    await claimed(fake_redis, "j")
    lease = await leases.acquire("j")
    lease.work = asyncio.create_task(asyncio.sleep(30))  # fixed: stands for a long job's work
    await fake_redis.set(lease_key("j"), b"someone-else")
    lease.extended_at -= 2.0  # due for extension: the round looks at it
    await leases.renew_once()
    assert lease.stop is Stop.LEASE_LOST
    await asyncio.wait([lease.work], timeout=2)  # until the cancelled work has stopped
    assert lease.work.cancelled()
    assert (await fake_redis.get(lease_key("j"))) == b"someone-else", "never renews another's lease"


async def working(leases: LeaseKeeper, redis: ArqRedis, job_id: str = "j") -> Lease:
    """The lease of a job that is claimed, leased and working (its work stands for a long job's)."""
    await claimed(redis, job_id)
    lease = await leases.acquire(job_id)
    assert lease is not None
    lease.work = asyncio.create_task(asyncio.sleep(30))
    return lease


async def test_a_cancel_announced_stops_the_work_at_once(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    lease = await working(leases, fake_redis)
    leases.cancel_requested("another-job")
    assert lease.stop is None
    leases.cancel_requested("j")
    assert lease.stop is Stop.CANCELLED
    await asyncio.wait([lease.work], timeout=2)  # until the cancelled work has stopped
    assert lease.work.cancelled()


async def test_a_cancel_whose_message_was_missed_is_found_by_the_renewal(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    lease = await working(leases, fake_redis)
    await fake_redis.pexpire(lease_key("j"), 3000)
    await fake_redis.set(cancel_key("j"), b"1")
    await leases.renew_once()  # the next round, whatever the lease's age
    assert lease.stop is Stop.CANCELLED
    assert await fake_redis.pttl(lease_key("j")) <= 3000, "a lease taken just now is not extended"
    await asyncio.wait([lease.work], timeout=2)  # until the cancelled work has stopped
    assert lease.work.cancelled()


async def test_a_released_lease_is_given_up_and_no_longer_renewed(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    await claimed(fake_redis, "j")
    lease = await leases.acquire("j")
    async with leases.holding(lease):
        pass
    assert await fake_redis.exists(lease_key("j")) == 0, "the next attempt may take it at once"
    await fake_redis.set(cancel_key("j"), b"1")
    await leases.renew_once()
    assert lease.stop is None


async def test_a_lease_given_up_by_the_jobs_end_is_neither_renewed_nor_released(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    await claimed(fake_redis, "j")
    lease = await leases.acquire("j")
    async with leases.holding(lease):
        await fake_redis.delete(lease_key("j"))  # what the ending publish call does
        lease.give_up()
        await fake_redis.set(lease_key("j"), b"next-attempt")  # another attempt took the job at once
        lease.extended_at -= 2.0  # due for extension, were it not given up
        await leases.renew_once()
        assert lease.stop is None, "not taken for a lost lease"
    assert await fake_redis.get(lease_key("j")) == b"next-attempt"
    assert await fake_redis.pttl(lease_key("j")) == -1, "the next attempt's lease was not renewed by this one"


async def test_releasing_never_deletes_another_attempts_lease(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    await claimed(fake_redis, "j")
    lease = await leases.acquire("j")
    await fake_redis.set(lease_key("j"), b"another-attempt")
    async with leases.holding(lease):
        pass
    assert await fake_redis.get(lease_key("j")) == b"another-attempt"


async def test_reaping_frees_only_claims_that_never_became_leases(fake_redis: ArqRedis) -> None:
    leases = keeper(fake_redis)
    await claimed(fake_redis, "dead", age_s=20)  # claimed 20 s ago, never leased: its worker died
    await claimed(fake_redis, "fresh", age_s=0)  # claimed just now: its worker is starting it
    await claimed(fake_redis, "leased", age_s=20)
    await leases.acquire("leased")
    assert await leases.reap_once() == 1
    assert await fake_redis.exists(claim_key("dead")) == 0
    assert await fake_redis.get(claim_key("fresh")) == b"1"
    assert await fake_redis.get(claim_key("leased")) == b"leased"


async def test_the_lease_comes_with_the_jobs_log_and_its_cancel_request(fake_redis: ArqRedis) -> None:
    await claimed(fake_redis, "j")
    await fake_redis.rpush(event_log_key("j"), b'{"event": 0}', b'{"event": 1}')
    await fake_redis.set(cancel_key("j"), b"1")
    lease = await keeper(fake_redis).acquire("j")
    assert lease is not None
    assert (lease.log, lease.cancelled) == ([b'{"event": 0}', b'{"event": 1}'], True)
    await claimed(fake_redis, "fresh")
    fresh = await keeper(fake_redis).acquire("fresh")
    assert fresh is not None and (fresh.log, fresh.cancelled) == ([], False)
