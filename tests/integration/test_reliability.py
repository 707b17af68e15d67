"""Faults, injected for real: killed and stopped workers, cancellations, LLM failures, Redis restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx2
import pytest

from arkq.contract import parse_event
from arkq.keys import cancel_key, event_log_key
from config_module.loader import load_config
from producer import (
    JobCancelled,
    JobFailed,
    JobIdInUse,
    Producer,
    QueueFull,
    RedisUnavailable,
    StreamReset,
)
from tests.servers import (
    PersistentRedis,
    WorkerFleet,
    ark_env,
    free_port,
    start_fake_llm,
    worker_pid,
)
from tests.streams import assert_one_end, text_of_last_attempt
from tests.waiting import until

LEASE = {"ARK_WORKER__LEASE_S": "2", "ARK_WORKER__LEASE_RENEW_S": "0.2"}


def lease_fleet(fleet: WorkerFleet, **settings: str) -> WorkerFleet:
    """Short leases, so that takeovers in tests take about two seconds."""
    fleet.env.update(LEASE)
    fleet.env.update({f"ARK_{key.upper()}": value for key, value in settings.items()})
    return fleet


async def events_of(producer: Producer, job_id: str, timeout: float = 30) -> list:
    async def collect() -> list:
        return [event async for event in producer.job(job_id).events()]

    return await asyncio.wait_for(collect(), timeout)


async def first_event(producer: Producer, job_id: str, kind: str, after_seq: int = -1, timeout: float = 20):
    async def wait():
        async for event in producer.job(job_id).events():
            if event.type == kind and event.seq > after_seq:
                return event
        raise AssertionError(f"job {job_id} ended without a {kind} event after seq {after_seq}")

    return await asyncio.wait_for(wait(), timeout)


async def emulator_stats(base_url: str) -> dict[str, int]:
    async with httpx2.AsyncClient() as client:
        return (await client.get(base_url.removesuffix("/v1") + "/stats")).json()


async def test_a_killed_workers_job_continues_on_another_worker(
    fleet: WorkerFleet, producer: Producer
) -> None:
    lease_fleet(fleet).start(2)
    job = await producer.enqueue([{"role": "user", "content": "long [[arkq:tokens=120 itl_ms=25]]"}])
    first = await first_event(producer, job.id, "token")
    started = (await events_of_now(producer, job.id))[0]
    os.kill(worker_pid(started.worker), signal.SIGKILL)
    killed_at = time.monotonic()
    restarted = await first_event(producer, job.id, "started", after_seq=first.seq, timeout=10)
    assert time.monotonic() - killed_at < 10
    assert restarted.attempt == 2 and restarted.worker != started.worker and restarted.continues
    events = await events_of(producer, job.id)
    assert_one_end(events)
    assert "reset" not in [event.type for event in events], "the output so far stays valid"
    assert sum(event.type == "token" for event in events) == 120
    result = await job.result(timeout=5)
    assert result.attempts == 2
    assert result.text == events[-1].text == text_of_last_attempt(events)


async def events_of_now(producer: Producer, job_id: str) -> list:
    """The events published so far, without waiting for the end."""
    return [parse_event(raw) for raw in await producer.redis.lrange(event_log_key(job_id), 0, -1)]


async def test_a_stalled_worker_never_publishes_beside_the_new_owner(
    fleet: WorkerFleet, producer: Producer
) -> None:
    lease_fleet(fleet).start(2)
    job = await producer.enqueue([{"role": "user", "content": "stall [[arkq:tokens=150 itl_ms=20]]"}])
    await first_event(producer, job.id, "token")
    stalled = fleet.by_pid(worker_pid((await events_of_now(producer, job.id))[0].worker))
    stalled.popen.send_signal(signal.SIGSTOP)  # frozen: its lease lapses while it still "runs" the job
    try:
        await first_event(producer, job.id, "started", after_seq=1, timeout=10)
    finally:
        stalled.popen.send_signal(signal.SIGCONT)  # it wakes up holding a stream it no longer owns
    events = await events_of(producer, job.id)
    assert_one_end(events)
    last_start = max(i for i, event in enumerate(events) if event.type == "started")
    assert worker_pid(events[last_start].worker) != stalled.popen.pid
    result = await job.result(timeout=5)
    assert result.attempts >= 2 and "reset" not in [event.type for event in events]
    # Not one token of the frozen attempt landed beside the winning one's: the answer has its 150.
    assert sum(event.type == "token" for event in events) == 150
    assert result.text == text_of_last_attempt(events)
    assert stalled.popen.poll() is None, "the stalled worker carries on serving"


async def test_max_tries_bounds_restarts_and_the_error_says_so(
    fleet: WorkerFleet, producer: Producer
) -> None:
    lease_fleet(fleet).start(1)
    job = await producer.enqueue([{"role": "user", "content": "always cut [[arkq:cut_after=2 tokens=20]]"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=60)
    assert failed.value.kind == "stream"
    assert "after 5 attempts" in str(failed.value)
    events = await events_of(producer, job.id)
    assert_one_end(events)
    assert [event.type for event in events].count("started") == 5
    assert [event.type for event in events].count("token") == 10  # each attempt went on for two more


async def test_a_cancelled_queued_job_never_runs(
    fleet: WorkerFleet, producer: Producer, fake_llm: str
) -> None:
    never = [{"role": "user", "content": "never [[arkq:tokens=5]]"}]
    job = await producer.enqueue(never, job_id="cancel-q")
    assert await job.cancel() == "cancelled"
    requests_before = (await emulator_stats(fake_llm))["requests"]
    fleet.start(1)
    sentinel = await producer.enqueue([{"role": "user", "content": "after"}])
    await sentinel.result(timeout=15)  # the worker has been through the queue
    assert [event.type for event in await events_of(producer, job.id)] == ["cancelled"]
    with pytest.raises(JobCancelled):
        await job.result(timeout=1)
    assert (await emulator_stats(fake_llm))["requests"] == requests_before + 1  # the sentinel only
    again = await producer.enqueue(never, job_id="cancel-q")
    assert again.id == "cancel-q" and await job.cancel() == "ended"
    with pytest.raises(JobIdInUse):  # the ID with another request: refused, not silently the old job
        await producer.enqueue([{"role": "user", "content": "never"}], job_id="cancel-q")
    assert [event.type for event in await events_of(producer, job.id)] == ["cancelled"], (
        "the ID is not reused"
    )


@pytest.fixture
def own_llm(tmp_path: Path) -> Iterator[str]:
    """An emulator for one test, whose counters no other test touches."""
    process, base_url = start_fake_llm(tmp_path)
    yield base_url
    process.stop()


async def test_a_cancelled_running_job_stops_and_frees_the_server_slot(
    fleet: WorkerFleet, producer: Producer, own_llm: str
) -> None:
    fleet.env["ARK_LLM__BASE_URL"] = own_llm
    lease_fleet(fleet).start(1)
    job = await producer.enqueue([{"role": "user", "content": "endless [[arkq:tokens=2000 itl_ms=10]]"}])
    await first_event(producer, job.id, "token")
    assert await job.cancel() == "cancelling"
    cancelled_at = time.monotonic()
    end = await first_event(producer, job.id, "cancelled", timeout=5)
    assert time.monotonic() - cancelled_at < 5
    events = await events_of(producer, job.id)
    assert_one_end(events)
    assert events[-1] == end
    with pytest.raises(JobCancelled) as cancelled:
        await job.result(timeout=1)
    assert cancelled.value.result.status == "cancelled"
    assert sum(event.type == "token" for event in events) < 2000
    # The emulator, like SGLang, keeps generating for a client that merely hung up: only the
    # abort frees the slot.
    stats = await emulator_stats(own_llm)
    assert stats["disconnected"] == 1
    assert stats["aborted"] == 1, "POST /abort_request reached the server"
    assert stats["active"] == 0


async def test_a_running_job_stops_the_moment_it_is_cancelled(fleet: WorkerFleet, producer: Producer) -> None:
    """The cancel is announced to the workers, not found at a renewal: with renewals 20 s apart, the
    job still ends within a second."""
    fleet.env.update({"ARK_WORKER__LEASE_S": "60", "ARK_WORKER__LEASE_RENEW_S": "20"})
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "endless [[arkq:tokens=2000 itl_ms=10]]"}])
    await first_event(producer, job.id, "token")
    cancelled_at = time.monotonic()
    assert await job.cancel() == "cancelling"
    await first_event(producer, job.id, "cancelled", timeout=5)
    took = time.monotonic() - cancelled_at
    assert took < 1.0, f"the cancel took {took:.2f} s: found by a renewal, not announced"


async def test_a_cancel_the_worker_did_not_hear_is_found_by_its_lease_renewal(
    fleet: WorkerFleet, producer: Producer
) -> None:
    lease_fleet(fleet).start(1)  # leases of 2 s: extended, and the flag checked, every ~0.7 s
    job = await producer.enqueue([{"role": "user", "content": "endless [[arkq:tokens=2000 itl_ms=10]]"}])
    await first_event(producer, job.id, "token")
    await producer.redis.set(cancel_key(job.id), "1")  # the flag alone: as if the message were lost
    end = await first_event(producer, job.id, "cancelled", timeout=10)
    events = await events_of(producer, job.id)
    assert_one_end(events)
    assert events[-1] == end
    assert sum(event.type == "token" for event in events) < 2000


@pytest.mark.parametrize(
    ("directive", "tokens"),
    [
        ("[[arkq:status=429 retry_after=1 times=1 tokens=9]]", 9),
        ("[[arkq:status=503 times=2 tokens=8]]", 8),
        ("[[arkq:status=500 times=1 tokens=7]]", 7),
        ("[[arkq:stream_error=503 error_after=3 times=1 tokens=11]]", 11),
        ("[[arkq:cut_after=4 times=1 tokens=12]]", 12),
    ],
)
async def test_transient_llm_failures_are_retried_to_a_complete_answer(
    fleet: WorkerFleet, producer: Producer, own_llm: str, directive: str, tokens: int
) -> None:
    fleet.env["ARK_LLM__BASE_URL"] = own_llm  # a fresh emulator: its fault budget is this test's
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": f"{time.time_ns()} {directive}"}])
    result = await job.result(timeout=30)
    events = await events_of(producer, job.id)
    assert_one_end(events)
    assert result.usage["completion_tokens"] == tokens
    assert result.text == text_of_last_attempt(events)
    stats = await emulator_stats(own_llm)
    assert stats["faults"] >= 1, "the fault fired"
    assert stats["requests"] == stats["faults"] + 1, "retried until one attempt went through"
    if "error_after" in directive or "cut_after" in directive:
        starts = [event for event in events if event.type == "started"]
        assert len(starts) == 2 and starts[1].continues, "the output before the failure was continued"
        assert "reset" not in [event.type for event in events]


@pytest.mark.parametrize(
    ("directive", "kind"),
    [("[[arkq:status=400]]", "bad_request"), ("[[arkq:context_overflow=1]]", "context_overflow")],
)
async def test_bad_requests_end_at_once_without_retry(
    fleet: WorkerFleet, producer: Producer, fake_llm: str, directive: str, kind: str
) -> None:
    fleet.start(1)
    before = (await emulator_stats(fake_llm))["requests"]
    job = await producer.enqueue([{"role": "user", "content": f"bad {directive}"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=15)
    assert failed.value.kind == kind
    assert (await emulator_stats(fake_llm))["requests"] == before + 1


async def test_an_unreachable_llm_server_is_retried_then_reported(
    fleet: WorkerFleet, producer: Producer
) -> None:
    fleet.env.update(
        ARK_LLM__BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
        ARK_LLM__MAX_RETRIES="1",
        ARK_LLM__BACKOFF_BASE_S="0.05",
        ARK_WORKER__MAX_TRIES="2",
    )
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "anyone?"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=30)
    assert failed.value.kind == "connect" and "after 2 requests" in str(failed.value)
    # Nothing was streamed: the link's retries were the job's whole budget, and no second attempt
    # multiplies them (worker.max_tries bounds only attempts that lost output).
    assert [event.type for event in await events_of(producer, job.id)].count("started") == 1


async def test_sigterm_lets_running_jobs_finish(fleet: WorkerFleet, producer: Producer) -> None:
    fleet.env["ARK_WORKER__SHUTDOWN_GRACE_S"] = "20"
    [worker] = fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "finish me [[arkq:tokens=40 itl_ms=25]]"}])
    await first_event(producer, job.id, "token")
    worker.popen.send_signal(signal.SIGTERM)
    stopped_picking = "Setting allow_pick_jobs to `False`"  # arq logs it as it takes the signal
    await until(lambda: stopped_picking in worker.log(), 10, "the worker to stop picking jobs")
    later = await producer.enqueue([{"role": "user", "content": "not taken by a stopping worker"}])
    result = await job.result(timeout=20)
    assert result.attempts == 1 and result.usage["completion_tokens"] == 40
    assert worker.popen.wait(20) == 0
    assert await later.fetch_result() is None and await later.is_pending()


async def test_sigterm_past_the_grace_hands_the_job_over_at_once(
    fleet: WorkerFleet, producer: Producer
) -> None:
    fleet.env.update(
        ARK_WORKER__SHUTDOWN_GRACE_S="0.5", ARK_WORKER__LEASE_S="30", ARK_WORKER__LEASE_RENEW_S="1"
    )
    fleet.start(2)
    job = await producer.enqueue([{"role": "user", "content": "too long [[arkq:tokens=300 itl_ms=20]]"}])
    await first_event(producer, job.id, "token")
    owner = fleet.by_pid(worker_pid((await events_of_now(producer, job.id))[0].worker))
    owner.popen.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    restarted = await first_event(producer, job.id, "started", after_seq=1, timeout=15)
    assert time.monotonic() - stopped_at < 10, "released at once, not after the 30 s lease"
    assert worker_pid(restarted.worker) != owner.popen.pid
    result = await job.result(timeout=30)
    assert result.attempts == 2
    assert result.text == text_of_last_attempt(await events_of(producer, job.id))


async def test_queue_max_depth_refuses_more_and_writes_nothing(redis_url: str) -> None:
    config = load_config({"ARK_QUEUE__MAX_DEPTH": "2"})
    async with Producer(redis_url, config=config) as producer:
        await producer.enqueue([{"role": "user", "content": "1"}])
        await producer.enqueue([{"role": "user", "content": "2"}])
        keys_before = sorted(await producer.redis.keys("*"))
        with pytest.raises(QueueFull, match=r"queue\.max_depth=2"):
            await producer.enqueue([{"role": "user", "content": "3"}])
        assert sorted(await producer.redis.keys("*")) == keys_before


async def test_a_job_nobody_waits_for_any_more_is_dropped_with_an_error(
    fleet: WorkerFleet, producer: Producer, fake_llm: str
) -> None:
    fleet.env["ARK_QUEUE__JOB_EXPIRY_S"] = "1"
    job = await producer.enqueue([{"role": "user", "content": "stale"}])
    await asyncio.sleep(1.5)  # fixed: the job must outlive its 1 s expiry before any worker starts
    before = (await emulator_stats(fake_llm))["requests"]
    fleet.start(1)
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=15)
    assert failed.value.kind == "expired"
    assert (await emulator_stats(fake_llm))["requests"] == before


async def test_tokens_honour_a_reset(fleet: WorkerFleet, producer: Producer) -> None:
    fleet.env["ARK_WORKER__RESUME_PARTIAL"] = "false"  # every new attempt starts over
    fleet.start(1)
    job = await producer.enqueue(
        [{"role": "user", "content": "[[arkq:stream_error=503 error_after=3 times=1 tokens=9 itl_ms=30]]"}]
    )
    seen: list[str] = []
    with pytest.raises(StreamReset):
        async for text in job.tokens():
            seen.append(text)
    assert len(seen) == 3
    final = [text async for text in job.tokens()]  # again: the new attempt only
    assert "".join(final) == await job.text(timeout=10)
    assert len(final) == 9


@pytest.fixture
async def aof_producer(aof_redis: PersistentRedis) -> AsyncIterator[Producer]:
    async with Producer(aof_redis.url) as opened:
        yield opened


async def test_workers_and_producers_ride_out_a_redis_restart(
    aof_redis: PersistentRedis, aof_producer: Producer, fake_llm: str, log_dir: Path
) -> None:
    url = aof_redis.url
    fleet = WorkerFleet(
        log_dir / "redis-restart", ark_env(url, fake_llm, **{k[4:].lower(): v for k, v in LEASE.items()})
    )
    fleet.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        fleet.start(2)
        running = await aof_producer.enqueue(
            [{"role": "user", "content": "through [[arkq:tokens=150 itl_ms=20]]"}]
        )
        await first_event(aof_producer, running.id, "token")
        follower = asyncio.create_task(events_of(aof_producer, running.id, timeout=60))
        await asyncio.to_thread(aof_redis.restart)
        result = await running.result(timeout=60)
        events = await follower
        assert_one_end(events)
        assert result.text == events[-1].text == text_of_last_attempt(events)
        assert len(fleet.alive()) == 2, "no worker crashed"
    except BaseException:
        print(fleet.logs())
        raise
    finally:
        fleet.stop()


async def test_a_job_queued_before_a_redis_restart_runs_after_it(
    aof_redis: PersistentRedis, aof_producer: Producer, fake_llm: str, log_dir: Path
) -> None:
    job = await aof_producer.enqueue([{"role": "user", "content": "persisted [[arkq:tokens=6]]"}])
    await asyncio.to_thread(aof_redis.restart)
    fleet = WorkerFleet(log_dir / "aof", ark_env(aof_redis.url, fake_llm))
    fleet.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        fleet.start(1)
        assert (await job.result(timeout=30)).usage["completion_tokens"] == 6
    finally:
        fleet.stop()


async def test_an_unreachable_redis_is_a_clear_error_within_the_timeout() -> None:
    config = load_config({"ARK_REDIS__CONNECT_TIMEOUT_S": "1"})
    started = time.monotonic()
    with pytest.raises(RedisUnavailable):
        async with Producer(f"redis://127.0.0.1:{free_port()}/0", config=config):
            pass
    assert time.monotonic() - started < 5


async def test_tokens_raise_when_the_job_fails(fleet: WorkerFleet, producer: Producer) -> None:
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "[[arkq:status=400]]"}])
    with pytest.raises(JobFailed) as failed:
        async for _ in job.tokens():
            pass
    assert failed.value.kind == "bad_request"


async def test_queue_max_depth_holds_under_concurrent_enqueues(redis_url: str) -> None:
    config = load_config({"ARK_QUEUE__MAX_DEPTH": "2"})
    async with Producer(redis_url, config=config) as producer:
        outcomes = await asyncio.gather(
            *(producer.enqueue([{"role": "user", "content": str(i)}]) for i in range(20)),
            return_exceptions=True,
        )
        assert sum(not isinstance(outcome, Exception) for outcome in outcomes) == 2
        assert all(isinstance(outcome, QueueFull) for outcome in outcomes if isinstance(outcome, Exception))
        assert await producer.redis.zcard("arq:queue") == 2
