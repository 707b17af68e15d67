"""The generation job itself, on fakeredis and the in-process emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from arq.connections import ArqRedis

from arkq.contract import DoneEvent, JobResult, StartedEvent, TokenEvent, parse_event
from arkq.keys import claim_key, event_log_key, lease_key, result_key
from arkq.lease import Lease, LeaseKeeper
from config_module.loader import load_config
from fake_llm import running_fake_llm
from model_module import ArkModelLink
from worker.job import generate
from worker.metrics import JobMetrics
from worker.publisher import EventPublisher
from worker.stats import WorkerStats

CONFIG = load_config({"ARK_WORKER__MAX_TRIES": "3"})
REQUEST = {"messages": [{"role": "user", "content": "hello [[arkq:tokens=5]]"}]}


@pytest.fixture
async def ctx(fake_redis: ArqRedis) -> AsyncIterator[dict[str, Any]]:
    await fake_redis.set(claim_key("job-1"), b"1")  # arq's claim; the job takes its lease
    leases = LeaseKeeper(
        fake_redis,
        lease_s=CONFIG.worker.lease_s,
        renew_s=CONFIG.worker.lease_renew_s,
        queue_name="arq:queue",
        claim_ttl_s=310,
    )
    async with running_fake_llm() as llm, ArkModelLink(base_url=llm.base_url, max_retries=0) as link:
        yield {
            "redis": fake_redis,
            "config": CONFIG,
            "link": link,
            "leases": leases,
            "worker_name": "test:1",
            "stats": WorkerStats(),
            "metrics": JobMetrics(CONFIG.llm.model_name, enabled=True),
            "job_id": "job-1",
            "job_try": 1,
            "enqueue_time": datetime.now(UTC),
        }


async def earlier_attempt(redis: ArqRedis) -> EventPublisher:
    """What a worker that died had published: it held the lease then."""
    await redis.set(lease_key("job-1"), b"dead-worker")
    log = await redis.lrange(event_log_key("job-1"), 0, -1)
    publisher = EventPublisher.open(
        redis, Lease("job-1", "dead-worker", log=log), channel_prefix="ark:tokens:", log_ttl_s=60
    )
    return publisher


async def logged(redis: ArqRedis) -> list:
    return [parse_event(raw) for raw in await redis.lrange(event_log_key("job-1"), 0, -1)]


async def test_a_job_publishes_started_tokens_done_and_stores_the_result(ctx: dict[str, Any]) -> None:
    assert await generate(ctx, REQUEST) == {"status": "done"}
    events = await logged(ctx["redis"])
    assert [e.type for e in events] == ["started", *["token"] * 5, "done"]
    stored = JobResult.model_validate_json(await ctx["redis"].get(result_key("job-1")))
    assert stored.text == events[-1].text == "".join(e.text for e in events[1:-1])
    assert stored.usage["completion_tokens"] == 5


async def test_a_retried_job_continues_the_earlier_output(ctx: dict[str, Any]) -> None:
    whole = (await generate_alone(ctx)).text
    earlier = await earlier_attempt(ctx["redis"])
    await earlier.publish(StartedEvent, attempt=1, worker="dead:1")
    first, second = whole.split(" ")[0], " " + whole.split(" ")[1]
    await earlier.publish(TokenEvent, text=first)  # then that worker was killed
    await earlier.publish(TokenEvent, text=second)
    await ctx["redis"].delete(lease_key("job-1"))  # its lease lapsed; this worker claimed the job
    await generate({**ctx, "job_try": 2}, REQUEST)
    events = await logged(ctx["redis"])
    assert [e.type for e in events] == ["started", "token", "token", "started", *["token"] * 3, "done"]
    assert events[3].continues and events[3].attempt == 2
    stored = JobResult.model_validate_json(await ctx["redis"].get(result_key("job-1")))
    assert stored.text == events[-1].text == whole == "".join(e.text for e in events if e.type == "token")
    assert stored.usage["completion_tokens"] == 5 and stored.attempts == 2  # as if uninterrupted


@pytest.mark.parametrize(
    ("settings", "request_", "why"),
    [
        ({"ARK_WORKER__RESUME_PARTIAL": "false"}, REQUEST, "worker.resume_partial is off"),
        ({}, {**REQUEST, "json_object": True}, "schema-constrained"),
    ],
)
async def test_a_retried_job_voids_the_earlier_output_where_it_cannot_continue(
    ctx: dict[str, Any], settings: dict[str, str], request_: dict[str, Any], why: str
) -> None:
    config = load_config({"ARK_WORKER__MAX_TRIES": "3", **settings})
    earlier = await earlier_attempt(ctx["redis"])
    await earlier.publish(StartedEvent, attempt=1, worker="dead:1")
    await earlier.publish(TokenEvent, text="partial")  # then that worker was killed
    await ctx["redis"].delete(lease_key("job-1"))  # its lease lapsed; this worker claimed the job
    await generate({**ctx, "config": config, "job_try": 2}, request_)
    events = await logged(ctx["redis"])
    assert [e.type for e in events[:4]] == ["started", "token", "reset", "started"]
    assert why in events[2].reason and not events[3].continues
    assert [e.seq for e in events] == list(range(len(events)))
    assert "partial" not in events[-1].text


async def generate_alone(ctx: dict[str, Any]) -> JobResult:
    """The uninterrupted answer, from a job of its own."""
    await ctx["redis"].set(claim_key("job-0"), b"1")
    await generate({**ctx, "job_id": "job-0"}, REQUEST)
    return JobResult.model_validate_json(await ctx["redis"].get(result_key("job-0")))


async def test_a_job_that_already_ended_does_not_end_twice(ctx: dict[str, Any]) -> None:
    earlier = await earlier_attempt(ctx["redis"])
    await earlier.publish(StartedEvent, attempt=1, worker="dead:1")
    await earlier.publish(DoneEvent, finish_reason="stop", usage=None, text="")
    await ctx["redis"].delete(lease_key("job-1"))
    await generate({**ctx, "job_try": 2}, REQUEST)
    assert [e.type for e in await logged(ctx["redis"])] == ["started", "done"]


async def test_past_max_tries_the_job_ends_with_an_error_that_says_so(ctx: dict[str, Any]) -> None:
    earlier = await earlier_attempt(ctx["redis"])
    for attempt in (1, 2, 3):
        await earlier.publish(StartedEvent, attempt=attempt, worker="dead:1")
    await ctx["redis"].delete(lease_key("job-1"))
    assert await generate({**ctx, "job_try": 4}, REQUEST) == {"status": "error"}
    last = (await logged(ctx["redis"]))[-1]
    assert (last.type, last.kind) == ("error", "max_tries")
    assert "3 attempts" in last.message


async def test_an_llm_error_is_an_error_event_and_result(ctx: dict[str, Any]) -> None:
    request = {"messages": [{"role": "user", "content": "x [[arkq:context_overflow=1]]"}]}
    await generate(ctx, request)
    last = (await logged(ctx["redis"]))[-1]
    assert (last.type, last.kind, last.retryable) == ("error", "context_overflow", False)
    stored = JobResult.model_validate_json(await ctx["redis"].get(result_key("job-1")))
    assert stored.status == "error" and stored.error.kind == "context_overflow"


async def test_a_job_past_its_timeout_reports_it(ctx: dict[str, Any]) -> None:
    config = load_config({"ARK_WORKER__JOB_TIMEOUT_S": "0.3"})
    request = {"messages": [{"role": "user", "content": "slow [[arkq:tokens=50 itl_ms=50]]"}]}
    await generate({**ctx, "config": config}, request)
    last = (await logged(ctx["redis"]))[-1]
    assert (last.type, last.kind) == ("error", "timeout")
    assert "worker.job_timeout_s" in last.message
