"""One retry budget per job: requests that fail before any output are retried by the link alone, and a
job sends at most `llm.max_retries + 1` of them, whatever its number of attempts. Counted at the
server: each test has an emulator of its own, whose /stats counts every request it received."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from producer import JobFailed, Producer
from tests.servers import WorkerFleet, ark_env, start_fake_llm
from tests.streams import assert_one_end

#: Fast backoff, and a budget of 3 requests per job.
RETRIES = {
    "ARK_LLM__MAX_RETRIES": "2",
    "ARK_LLM__BACKOFF_BASE_S": "0.01",
    "ARK_LLM__BACKOFF_MAX_S": "0.02",
    "ARK_WORKER__MAX_TRIES": "4",
}


@pytest.fixture
def own_llm(tmp_path: Path) -> Iterator[str]:
    process, base_url = start_fake_llm(tmp_path)
    yield base_url
    process.stop()


def requests_at(base_url: str) -> int:
    stats = httpx2.get(base_url.removesuffix("/v1") + "/stats").json()
    return int(stats["requests"])


def workers(fleet: WorkerFleet, redis_url: str, llm_url: str, **extra: str) -> WorkerFleet:
    fleet.env.update(ark_env(redis_url, llm_url))
    fleet.env.update(RETRIES, **extra)
    fleet.start(1)
    return fleet


async def failed_job(producer: Producer, directive: str) -> JobFailed:
    job = await producer.enqueue([{"role": "user", "content": f"hello [[arkq:{directive}]]"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=60)
    events = [event async for event in producer.job(job.id).events()]
    assert_one_end(events)
    assert [event.type for event in events].count("started") == 1, "no new attempt for it"
    return failed.value


async def test_a_server_answering_502_gets_the_budgeted_requests_and_no_more(
    fleet: WorkerFleet, producer: Producer, redis_url: str, own_llm: str
) -> None:
    workers(fleet, redis_url, own_llm)
    failed = await failed_job(producer, "status=502 times=1000")
    assert requests_at(own_llm) == 3  # max_retries + 1
    assert failed.kind == "server_error" and "after 3 requests" in str(failed)


async def test_retry_after_is_honoured_and_the_budget_holds(
    fleet: WorkerFleet, producer: Producer, redis_url: str, own_llm: str
) -> None:
    workers(fleet, redis_url, own_llm)
    failed = await failed_job(producer, "status=503 retry_after=1 times=1000")
    assert requests_at(own_llm) == 3
    assert failed.kind == "server_error" and "after 3 requests" in str(failed)
    assert "queue is full" in str(failed)  # the server's own words reach the caller
    # The caller hears what the server said: try again, after a second.
    assert failed.retryable and failed.retry_after == 1


async def test_a_retry_after_beyond_the_cap_is_cut_to_it(
    fleet: WorkerFleet, producer: Producer, redis_url: str, own_llm: str
) -> None:
    """An hour's Retry-After waited in full would hold the job for hours; capped, it ends in seconds."""
    workers(fleet, redis_url, own_llm, ARK_LLM__MAX_RETRY_AFTER_S="0.2")
    failed = await failed_job(producer, "status=429 retry_after=3600 times=1000")
    assert requests_at(own_llm) == 3
    assert failed.kind == "rate_limit" and "after 3 requests" in str(failed)
    assert failed.retryable and failed.retry_after == 3600  # the server's word, not the cap


async def test_only_a_stream_that_broke_after_output_starts_a_new_attempt(
    fleet: WorkerFleet, producer: Producer, redis_url: str, own_llm: str
) -> None:
    """A stream cut after its first tokens is output lost: a new attempt (continuing the answer), one
    request each, up to worker.max_tries; those requests do not spend the budget for failures before
    output. (The answer is long enough that every continuation streams some of it before its cut.)"""
    workers(fleet, redis_url, own_llm)
    job = await producer.enqueue([{"role": "user", "content": "x [[arkq:cut_after=2 tokens=60 times=1000]]"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=60)
    events = [event async for event in producer.job(job.id).events()]
    assert_one_end(events)
    assert [event.type for event in events].count("started") == 4  # worker.max_tries
    assert requests_at(own_llm) == 4
    assert failed.value.kind == "stream" and "after 4 attempts" in str(failed.value)


async def test_refusals_within_the_budget_still_end_done(
    fleet: WorkerFleet, producer: Producer, redis_url: str, own_llm: str
) -> None:
    workers(fleet, redis_url, own_llm)
    job = await producer.enqueue([{"role": "user", "content": "x [[arkq:status=503 times=2 tokens=5]]"}])
    result = await job.result(timeout=60)
    assert result.usage is not None and result.usage["completion_tokens"] == 5
    assert requests_at(own_llm) == 3
