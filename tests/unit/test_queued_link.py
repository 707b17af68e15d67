"""`QueuedModelLink` on fakeredis, with the test playing the worker: what each call enqueues, how a job's
events come back as the direct link's values and errors, and that a caller leaving cancels its job."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest
from arq.connections import ArqRedis

from arkq.connection import connect
from arkq.contract import ErrorEvent, ReasoningEvent, ResetEvent, ToolCallEvent
from arkq.errors import ERROR_KINDS, ModelError, RedisUnavailable
from bench.processes import free_port
from config_module.loader import load_config
from model_module import ArkModelLink, Finish, ReasoningDelta, TextDelta, ToolCallDelta
from producer import InvalidRequest, JobCancelled, Producer, QueuedModelLink, StreamReset
from producer.link import WORKER_ERROR_KINDS, model_error_of_job
from tests.waiting import until
from tests.worker_stand_in import STARTED, cancel_requested, done, publish, queued_job, token

CONFIG = load_config({})
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
async def producer(fake_redis: ArqRedis) -> AsyncIterator[Producer]:
    async with Producer(redis=fake_redis, config=CONFIG) as opened:
        yield opened


@pytest.fixture
def link(producer: Producer) -> QueuedModelLink:
    return QueuedModelLink(producer=producer)


# -- the same API ---------------------------------------------------------------------------------------


PUBLIC = ("generate_response", "generate_stream", "make_llm_call", "stream", "aclose", "_format_messages")


@pytest.mark.parametrize("method", [*PUBLIC, "__aenter__", "__aexit__"])
def test_every_method_of_the_direct_link_has_the_same_signature(method: str) -> None:
    direct = inspect.signature(getattr(ArkModelLink, method))
    queued = inspect.signature(getattr(QueuedModelLink, method))
    assert list(direct.parameters) == list(queued.parameters)
    for name, parameter in direct.parameters.items():
        assert (parameter.kind, parameter.default) == (
            queued.parameters[name].kind,
            queued.parameters[name].default,
        )
    assert inspect.iscoroutinefunction(getattr(ArkModelLink, method)) == inspect.iscoroutinefunction(
        getattr(QueuedModelLink, method)
    )
    assert inspect.isasyncgenfunction(getattr(ArkModelLink, method)) == inspect.isasyncgenfunction(
        getattr(QueuedModelLink, method)
    )


def test_the_constructor_takes_the_direct_links_positional_parameters_and_config_defaults() -> None:
    direct = list(inspect.signature(ArkModelLink).parameters)[:4]
    assert list(inspect.signature(QueuedModelLink).parameters)[:4] == direct
    link = QueuedModelLink()
    assert (link.model_name, link.max_tokens, link.temperature) == ("tgi", 1024, 0.7)
    custom = QueuedModelLink("qwen", None, 64, 0)
    assert (custom.model_name, custom.max_tokens, custom.temperature) == ("qwen", 64, 0.0)
    assert isinstance(custom.temperature, float)
    with pytest.raises(ValueError, match="max_tokens"):
        QueuedModelLink(max_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        QueuedModelLink(temperature=2.5)
    with pytest.raises(ValueError, match="not both"):
        QueuedModelLink(redis_url="redis://localhost:1/0", producer=Producer(config=CONFIG))


def test_the_arkos_path_and_the_producer_export_the_same_classes() -> None:
    import model_module.ArkModelNew as arkos
    import model_module.errors
    import producer

    assert arkos.QueuedModelLink is producer.QueuedModelLink is QueuedModelLink
    assert arkos.ModelError is model_module.errors.ModelError is producer.ModelError is ModelError


# -- calls become jobs ----------------------------------------------------------------------------------


async def test_generate_response_is_one_job_whose_done_text_is_the_answer(
    link: QueuedModelLink, fake_redis: ArqRedis
) -> None:
    call = asyncio.create_task(link.generate_response(HELLO))
    job_id, request = await queued_job(fake_redis)
    assert (request.model, request.max_tokens, request.temperature) == ("tgi", 1024, 0.7)
    assert request.messages[0].content == "Hello"
    await publish(fake_redis, job_id, STARTED, token("Hi "), token("there"), done("Hi there"))
    assert await asyncio.wait_for(call, 5) == "Hi there"


async def test_a_job_carries_the_links_settings_and_the_calls_parameters(
    producer: Producer, fake_redis: ArqRedis
) -> None:
    link = QueuedModelLink("qwen", None, 32, 0, producer=producer)
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
    ]
    events = link.stream(
        messages,
        max_tokens=7,
        tools=[WEATHER_TOOL],
        sampling={"tool_choice": "auto", "seed": 3, "response_format": {"type": "json_object"}},
    )
    first = asyncio.create_task(anext(events))
    job_id, request = await queued_job(fake_redis)
    assert (request.model, request.max_tokens, request.temperature) == ("qwen", 7, 0.0)
    assert request.tools == [WEATHER_TOOL] and request.tool_choice == "auto" and request.seed == 3
    assert request.json_object is True
    assert [m.to_openai() for m in request.messages] == link._format_messages(messages)
    await publish(fake_redis, job_id, done("{}"))
    assert await asyncio.wait_for(first, 5) == Finish("stop", {"completion_tokens": 2})
    await events.aclose()


@pytest.mark.parametrize(
    ("json_schema", "schema", "json_object"),
    [
        (None, None, False),
        ({"type": "text"}, None, False),
        ({"type": "json_object"}, None, True),
        (
            {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
            {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object"}}},
            False,
        ),
    ],
)
async def test_json_schema_goes_into_the_job_as_the_server_would_read_it(
    link: QueuedModelLink,
    fake_redis: ArqRedis,
    json_schema: dict[str, object] | None,
    schema: dict[str, object] | None,
    json_object: bool,
) -> None:
    call = asyncio.create_task(link.generate_response(HELLO, json_schema))
    job_id, request = await queued_job(fake_redis)
    assert (request.json_schema, request.json_object) == (schema, json_object)
    await publish(fake_redis, job_id, done("{}"))
    assert await asyncio.wait_for(call, 5) == "{}"


async def test_stream_yields_the_direct_links_own_event_classes(
    link: QueuedModelLink, fake_redis: ArqRedis
) -> None:
    async def collect() -> list[object]:
        return [event async for event in link.stream(HELLO, tools=[WEATHER_TOOL])]

    call = asyncio.create_task(collect())
    job_id, _ = await queued_job(fake_redis)
    await publish(
        fake_redis,
        job_id,
        STARTED,
        (ReasoningEvent, {"text": "hmm"}),
        (ToolCallEvent, {"index": 0, "id": "call_1", "name": "weather", "arguments": ""}),
        (ToolCallEvent, {"index": 0, "arguments": '{"city": "Paris"}'}),
        done("", "tool_calls"),
    )
    assert await asyncio.wait_for(call, 5) == [
        ReasoningDelta("hmm"),
        ToolCallDelta(0, "call_1", "weather", ""),
        ToolCallDelta(0, None, None, '{"city": "Paris"}'),
        Finish("tool_calls", {"completion_tokens": 2}),
    ]


async def test_generate_stream_and_make_llm_call_yield_the_text(
    link: QueuedModelLink, fake_redis: ArqRedis
) -> None:
    for start in (lambda: link.generate_stream(HELLO), lambda: link.make_llm_call(HELLO, None, stream=True)):
        call = asyncio.create_task(_texts_of(start))
        job_id, _ = await queued_job(fake_redis)
        await fake_redis.zrem("arq:queue", job_id)
        await publish(
            fake_redis, job_id, STARTED, token("a"), (ReasoningEvent, {"text": "x"}), token("b"), done("ab")
        )
        assert await asyncio.wait_for(call, 5) == "ab"
    call = asyncio.create_task(link.make_llm_call(HELLO, None))
    job_id, _ = await queued_job(fake_redis)
    await publish(fake_redis, job_id, done("whole"))
    assert await asyncio.wait_for(call, 5) == "whole"


async def _texts_of(start: object) -> str:
    made = start()  # type: ignore[operator]
    pieces = await made if inspect.isawaitable(made) else made
    return "".join([piece async for piece in pieces])


async def test_a_restart_before_any_output_is_followed_silently(
    link: QueuedModelLink, fake_redis: ArqRedis
) -> None:
    async def collect() -> list[object]:
        return [event async for event in link.stream(HELLO)]

    call = asyncio.create_task(collect())
    job_id, _ = await queued_job(fake_redis)
    await publish(fake_redis, job_id, STARTED, (ResetEvent, {"reason": "attempt 2 starts over"}), STARTED)
    await publish(fake_redis, job_id, token("ok"), done("ok"))
    assert await asyncio.wait_for(call, 5) == [TextDelta("ok"), Finish("stop", {"completion_tokens": 2})]


async def test_a_restart_after_output_raises_the_direct_links_broken_stream_error_and_cancels_the_job(
    link: QueuedModelLink, fake_redis: ArqRedis
) -> None:
    seen: list[object] = []

    async def collect() -> None:
        async for event in link.stream(HELLO):
            seen.append(event)

    call = asyncio.create_task(collect())
    job_id, _ = await queued_job(fake_redis)
    await publish(
        fake_redis, job_id, STARTED, token("partial"), (ResetEvent, {"reason": "attempt 2 starts over"})
    )
    with pytest.raises(ModelError) as raised:
        await asyncio.wait_for(call, 5)
    assert seen == [TextDelta("partial")]
    assert raised.value.kind == "stream" and raised.value.retryable
    assert isinstance(raised.value.__cause__, StreamReset)
    assert await cancel_requested(fake_redis, job_id)


# -- failures -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ERROR_KINDS))
@pytest.mark.parametrize("status_code", [None, 429, 503])
def test_a_jobs_error_report_gives_back_the_direct_links_model_error(
    kind: str, status_code: int | None
) -> None:
    original = ModelError(kind, "the server said no (after 4 requests)", status_code=status_code)  # type: ignore[arg-type]
    again = model_error_of_job(error_event(kind, str(original), original.retryable))
    assert repr(again) == repr(original)


def test_a_jobs_error_carries_back_retryable_and_retry_after_as_the_worker_saw_them() -> None:
    # A 2xx the server garbled: a server_error that trying again will not mend; a 429 with Retry-After.
    garbled = ModelError("server_error", "malformed response: no choices", retryable=False)
    assert model_error_of_job(error_event("server_error", str(garbled), False)).retryable is False
    limited = ModelError("rate_limit", "slow down", retry_after=7.0, status_code=429)
    again = model_error_of_job(error_event("rate_limit", str(limited), True, retry_after=7.0))
    assert repr(again) == repr(limited) and again.retry_after == 7.0


def error_event(
    kind: str, message: str, retryable: bool = False, retry_after: float | None = None
) -> ErrorEvent:
    return ErrorEvent(
        job_id="j", seq=3, kind=kind, message=message, retryable=retryable, retry_after=retry_after
    )


@pytest.mark.parametrize(("kind", "expected"), sorted(WORKER_ERROR_KINDS.items()))
def test_the_workers_own_error_kinds_map_to_the_nearest_model_error(
    kind: str, expected: tuple[str, bool]
) -> None:
    error = model_error_of_job(error_event(kind, "what happened"))
    assert (error.kind, error.retryable) == expected
    assert kind in error.message and "what happened" in error.message


def test_an_unknown_job_error_kind_is_a_server_error_not_retried() -> None:
    error = model_error_of_job(error_event("something_new", "what happened"))
    assert (error.kind, error.retryable) == ("server_error", False)


async def test_a_failed_job_raises_its_model_error(link: QueuedModelLink, fake_redis: ArqRedis) -> None:
    call = asyncio.create_task(link.generate_response(HELLO))
    job_id, _ = await queued_job(fake_redis)
    report = str(ModelError("context_overflow", "The input (9 tokens) is longer", status_code=400))
    await publish(
        fake_redis,
        job_id,
        STARTED,
        (ErrorEvent, {"kind": "context_overflow", "message": report, "retryable": False}),
    )
    with pytest.raises(ModelError) as raised:
        await asyncio.wait_for(call, 5)
    assert (raised.value.kind, raised.value.status_code, raised.value.retryable) == (
        "context_overflow",
        400,
        False,
    )
    assert not await fake_redis.exists(f"ark:cancel:{job_id}"), "an ended job is not cancelled"


async def test_a_job_cancelled_elsewhere_raises_job_cancelled(
    link: QueuedModelLink, producer: Producer, fake_redis: ArqRedis
) -> None:
    call = asyncio.create_task(link.generate_response(HELLO))
    job_id, _ = await queued_job(fake_redis)
    assert await producer.job(job_id).cancel() == "cancelled"
    with pytest.raises(JobCancelled) as raised:
        await asyncio.wait_for(call, 5)
    assert raised.value.job_id == job_id and raised.value.result.status == "cancelled"


async def test_a_full_queue_is_a_rate_limit_error(fake_redis: ArqRedis) -> None:
    config = load_config({"ARK_QUEUE__MAX_DEPTH": "1"})
    async with Producer(redis=fake_redis, config=config) as producer:
        await producer.enqueue(HELLO)
        with pytest.raises(ModelError) as raised:
            await QueuedModelLink(producer=producer).generate_response(HELLO)
    assert (raised.value.kind, raised.value.retryable) == ("rate_limit", True)
    assert type(raised.value.__cause__).__name__ == "QueueFull"


@pytest.mark.parametrize(
    ("parameter", "value"),
    [("rid", "r-1"), ("extra_body", {"x": 1}), ("budget", object()), ("sampling", {"logprobs": True})],
)
async def test_what_a_job_cannot_carry_is_refused_before_anything_is_enqueued(
    link: QueuedModelLink, fake_redis: ArqRedis, parameter: str, value: object
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await anext(link.stream(HELLO, **{parameter: value}))  # type: ignore[arg-type]
    assert raised.value.field == parameter
    assert await fake_redis.zcard("arq:queue") == 0


async def test_invalid_parameters_are_value_errors_as_with_the_direct_link(
    link: QueuedModelLink, fake_redis: ArqRedis
) -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        await anext(link.stream(HELLO, max_tokens=0))
    with pytest.raises(ValueError, match="messages"):
        await link.generate_response([])
    assert await fake_redis.zcard("arq:queue") == 0


# -- a caller that leaves -------------------------------------------------------------------------------


async def test_a_timeout_around_the_call_cancels_the_job(link: QueuedModelLink, fake_redis: ArqRedis) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await link.generate_response(HELLO)
    assert await fake_redis.zcard("arq:queue") == 0, "the queued job was cancelled: no worker will take it"
    (log_key,) = await fake_redis.keys("ark:events:*")
    assert b'"type":"cancelled"' in (await fake_redis.lrange(log_key, 0, -1))[-1]


async def test_a_stream_left_early_cancels_the_job(link: QueuedModelLink, fake_redis: ArqRedis) -> None:
    async def first_text() -> str:
        async for text in link.generate_stream(HELLO):
            return text
        raise AssertionError("no text")

    call = asyncio.create_task(first_text())
    job_id, _ = await queued_job(fake_redis)
    await publish(fake_redis, job_id, STARTED, token("first"), token("second"))
    assert await asyncio.wait_for(call, 5) == "first"
    # Left without `aclosing`, the stream is closed when the loop finalizes it, a moment later.
    await until(lambda: cancel_requested(fake_redis, job_id), 5, "the job cancelled")


async def test_a_lent_producer_stays_open_after_aclose(producer: Producer, fake_redis: ArqRedis) -> None:
    async with QueuedModelLink(producer=producer) as link:
        assert link._producer() is producer
    assert await producer.redis.ping()


async def test_a_queue_out_of_reach_is_a_connect_error(unused_port: int) -> None:
    config = load_config({"ARK_REDIS__CONNECT_TIMEOUT_S": "0.5"})
    nowhere = connect(config, f"redis://127.0.0.1:{unused_port}/0")
    link = QueuedModelLink(producer=Producer(config=config, redis=nowhere))
    with pytest.raises(ModelError) as raised:
        await link.generate_response(HELLO)
    await nowhere.aclose()
    assert (raised.value.kind, raised.value.retryable) == ("connect", True)
    assert isinstance(raised.value.__cause__, RedisUnavailable)


def test_a_base_url_is_taken_and_said_to_be_unused(caplog: pytest.LogCaptureFixture) -> None:
    QueuedModelLink(base_url=CONFIG.llm.base_url)  # the configured one: nothing to say
    assert not caplog.records
    QueuedModelLink("m", "http://elsewhere:30000/v1")
    (record,) = caplog.records
    assert "http://elsewhere:30000/v1" in record.getMessage() and "llm.base_url" in record.getMessage()


@pytest.fixture
def unused_port() -> int:
    return free_port()
