import json

import pytest
from arq.connections import ArqRedis

from arkq.contract import GenerationRequest
from arkq.envelope import JOB_FUNCTION
from arkq.keys import result_key
from arkq.messages import SystemMessage, UserMessage
from config_module.loader import load_config
from producer import InvalidRequest, JobIdInUse, JobNotFound, Producer, QueueFull, TenantLimitReached

HELLO = [UserMessage(content="Hello!")]


@pytest.fixture
async def producer(fake_redis: ArqRedis) -> Producer:
    async with Producer(redis=fake_redis, config=load_config({})) as opened:
        yield opened


async def test_enqueue_writes_a_json_job_with_an_unguessable_id(
    producer: Producer, fake_redis: ArqRedis
) -> None:
    job = await producer.enqueue([SystemMessage(content="Be brief."), *HELLO], max_tokens=5)
    assert len(job.id) == 32 and int(job.id, 16) >= 0
    raw = await fake_redis.get(f"arq:job:{job.id}")
    stored = json.loads(raw)  # JSON, not pickle
    assert stored["f"] == JOB_FUNCTION
    request = GenerationRequest.model_validate(stored["a"][0])
    assert [m.content for m in request.messages] == ["Be brief.", "Hello!"]
    assert request.max_tokens == 5
    assert await fake_redis.zscore("arq:queue", job.id) is not None


async def test_messages_may_be_plain_dicts(producer: Producer) -> None:
    job = await producer.enqueue([{"role": "user", "content": "hi"}])
    assert await job.exists()


async def test_two_enqueues_make_two_different_ids(producer: Producer) -> None:
    first, second = await producer.enqueue(HELLO), await producer.enqueue(HELLO)
    assert first.id != second.id


async def test_the_same_job_id_is_enqueued_once(producer: Producer, fake_redis: ArqRedis) -> None:
    await producer.enqueue(HELLO, job_id="order-17")
    again = await producer.enqueue(HELLO, job_id="order-17")
    assert again.id == "order-17"
    assert await fake_redis.zcard("arq:queue") == 1


async def test_a_job_id_with_another_request_is_refused_writing_nothing(
    producer: Producer, fake_redis: ArqRedis
) -> None:
    await producer.enqueue(HELLO, job_id="order-17")
    before = {key: await fake_redis.dump(key) for key in await fake_redis.keys("*")}
    for other in (
        {"messages": [UserMessage(content="something else")]},
        {"messages": HELLO, "max_tokens": 5},
        {"messages": HELLO, "metadata": {"user": "u1"}},
    ):
        with pytest.raises(JobIdInUse) as refused:
            await producer.enqueue(**other, job_id="order-17")  # type: ignore[arg-type]
        assert refused.value.job_id == "order-17" and refused.value.field == "job_id"
        assert isinstance(refused.value, InvalidRequest)
    after = {key: await fake_redis.dump(key) for key in await fake_redis.keys("*")}
    assert after == before
    stored = json.loads(await fake_redis.get("arq:job:order-17"))
    assert stored["a"][0]["messages"][0]["content"] == "Hello!"


async def test_an_ended_job_keeps_its_request_digest(producer: Producer, fake_redis: ArqRedis) -> None:
    await producer.enqueue(HELLO, job_id="ended-1")
    await fake_redis.delete("arq:job:ended-1")  # arq deletes it when the job ends
    await fake_redis.set(result_key("ended-1"), b"{}")
    assert (await producer.enqueue(HELLO, job_id="ended-1")).id == "ended-1"
    with pytest.raises(JobIdInUse):
        await producer.enqueue([UserMessage(content="another")], job_id="ended-1")


async def test_a_finished_job_id_is_not_run_again(producer: Producer, fake_redis: ArqRedis) -> None:
    await fake_redis.set(result_key("done-1"), b"{}")
    await producer.enqueue(HELLO, job_id="done-1")
    assert await fake_redis.zcard("arq:queue") == 0


@pytest.mark.parametrize(
    ("call", "named"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "Hello"}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0"),
        ({"messages": [{"role": "user", "content": ["parts"]}]}, "messages.0.user.content"),
        ({"messages": [{"role": "user"}]}, "messages.0.user.content"),
        ({"json_schema": {"type": "object"}}, "json_schema"),
        ({"json_schema": ["not", "a", "dict"]}, "json_schema"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "7"}, "max_tokens"),
        ({"temperature": "0.5"}, "temperature"),
        ({"messages": [{"role": "user", "content": b"bytes"}]}, "messages.0.user.content"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": -1}, "temperature"),
        ({"job_id": "has space"}, "job_id"),
        ({"job_id": ""}, "job_id"),
        ({"messages": [{"role": "user", "content": "x" * 2_000_000}]}, "max_payload_bytes"),
    ],
)
async def test_bad_requests_fail_in_enqueue_and_write_nothing(
    producer: Producer, fake_redis: ArqRedis, call: dict[str, object], named: str
) -> None:
    arguments = {"messages": HELLO, **call}
    with pytest.raises(InvalidRequest, match=named.replace(".", r"\.")):
        await producer.enqueue(**arguments)
    assert await fake_redis.dbsize() == 0


@pytest.mark.parametrize(
    ("call", "culprit"),
    [
        ({"metadata": {"notes": "m" * 5_000_000}}, "metadata: 5000"),
        ({"messages": [{"role": "user", "content": "hi"}] * 100_000}, "messages: 100000 messages"),
        (
            {
                "json_schema": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": {"description": "d" * 3_000_000}},
                }
            },
            "json_schema: 3000",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "description": "t" * 2_000_000}}]},
            "tools: 2000",
        ),
    ],
)
async def test_an_oversized_request_names_its_largest_field(
    producer: Producer, fake_redis: ArqRedis, call: dict[str, object], culprit: str
) -> None:
    """Too large says what is too large: the field, and its size in bytes."""
    with pytest.raises(InvalidRequest) as refused:
        await producer.enqueue(**{"messages": HELLO, **call})
    assert str(refused.value).startswith(culprit), refused.value
    assert "over queue.max_payload_bytes=1000000" in str(refused.value)
    assert await fake_redis.dbsize() == 0


async def test_events_of_an_unknown_job_raise_not_found(producer: Producer) -> None:
    with pytest.raises(JobNotFound):
        async for _ in producer.job("never-enqueued").events():
            pass


async def test_an_unopened_producer_says_how_to_open_it() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        Producer().job("x")


async def test_a_tenant_owns_its_jobs_and_is_held_to_its_limit(
    producer: Producer, fake_redis: ArqRedis
) -> None:
    first = await producer.enqueue(HELLO, tenant="alice", max_active=2)
    await producer.enqueue(HELLO, tenant="alice", max_active=2)
    assert await first.tenant() == "alice"
    assert await (await producer.enqueue(HELLO)).tenant() is None
    before = await fake_redis.zcard("arq:queue")
    with pytest.raises(TenantLimitReached) as refused:
        await producer.enqueue(HELLO, tenant="alice", max_active=2, job_id="third")
    assert refused.value.tenant == "alice" and refused.value.depth == 2
    assert isinstance(refused.value, QueueFull)
    assert await fake_redis.zcard("arq:queue") == before and not await fake_redis.exists("arq:job:third")
    # Another tenant is not held to alice's count.
    await producer.enqueue(HELLO, tenant="bob", max_active=1)
    # A job that ends (arq deletes its job key) frees its slot.
    await fake_redis.delete(f"arq:job:{first.id}")
    await producer.enqueue(HELLO, tenant="alice", max_active=2, job_id="third")
    assert await producer.job("third").tenant() == "alice"


async def test_a_tenant_name_is_checked(producer: Producer) -> None:
    with pytest.raises(InvalidRequest, match="tenant"):
        await producer.enqueue(HELLO, tenant="has space")
