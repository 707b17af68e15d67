"""The whole path for real: producer → Redis → arq worker processes → ArkModelLink → emulator → events."""

from __future__ import annotations

import asyncio
import json
import time

import httpx2
import jsonschema
import openai
import pytest
import redis.asyncio
from pydantic import BaseModel

from arkq.envelope import JOB_FUNCTION, encode_job, serialize
from arkq.keys import health_check_key, wake_channel
from producer import InvalidRequest, JobFailed, Producer
from tests.servers import WorkerFleet
from tests.waiting import until


async def events_of(producer: Producer, job_id: str) -> list:
    return [event async for event in producer.job(job_id).events()]


async def direct_completion(base_url: str, prompt: str) -> str:
    """What the server sends for this prompt when asked directly, without arkq in between."""
    async with openai.AsyncOpenAI(base_url=base_url, api_key="-", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="tgi", messages=[{"role": "user", "content": prompt}], max_tokens=1024, temperature=0.7
        )
    return completion.choices[0].message.content or ""


def assert_complete_sequence(events: list, job_id: str) -> None:
    assert [event.seq for event in events] == list(range(len(events)))
    assert all(event.job_id == job_id for event in events)
    assert events[0].type == "started"
    assert [event.type for event in events].count("done") == 1
    assert events[-1].type == "done"


async def test_fifty_concurrent_jobs_on_two_workers(
    fleet: WorkerFleet, producer: Producer, fake_llm: str
) -> None:
    fleet.env["ARK_WORKER__MAX_JOBS"] = "25"  # neither worker can take all 50: both must serve
    fleet.start(2)
    prompts = [f"Job {i}: say something about the number {i}." for i in range(50)]
    jobs = await asyncio.gather(*(producer.enqueue([{"role": "user", "content": p}]) for p in prompts))
    sequences = await asyncio.wait_for(asyncio.gather(*(events_of(producer, job.id) for job in jobs)), 60)
    workers = set()
    for prompt, job, events in zip(prompts, jobs, sequences, strict=True):
        assert_complete_sequence(events, job.id)
        streamed = "".join(event.text for event in events if event.type == "token")
        result = await job.result(timeout=5)
        assert streamed == result.text == events[-1].text
        assert streamed == await direct_completion(fake_llm, prompt)
        assert result.usage["completion_tokens"] > 0
        assert result.finish_reason == "stop"
        assert result.timings.queued_s >= 0 and result.timings.ttft_s is not None
        workers.add(events[0].worker)
    assert len(workers) == 2, "both worker processes should have taken jobs"


async def test_subscribers_mid_stream_and_after_done_get_the_same_sequence(
    fleet: WorkerFleet, producer: Producer
) -> None:
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "slowly [[arkq:tokens=60 itl_ms=15]]"}])
    from_start = asyncio.create_task(events_of(producer, job.id))
    async for event in job.events():
        if event.type == "token" and event.seq >= 5:
            break
    assert await job.fetch_result() is None, "the second reader must attach before the job ends"
    mid_stream = asyncio.create_task(events_of(producer, job.id))
    first, middle = await asyncio.wait_for(asyncio.gather(from_start, mid_stream), 30)
    after_done = await events_of(producer, job.id)
    assert first == middle == after_done
    assert_complete_sequence(first, job.id)
    assert sum(event.type == "token" for event in first) == 60


class Review(BaseModel):
    title: str
    rating: int
    tags: list[str]
    summary: str | None = None


async def test_a_json_schema_job_returns_json_that_validates(fleet: WorkerFleet, producer: Producer) -> None:
    fleet.start(1)
    schema = Review.model_json_schema()
    job = await producer.enqueue(
        [{"role": "user", "content": "Review a film."}],
        json_schema={"type": "json_schema", "json_schema": {"name": "review", "schema": schema}},
    )
    result = await job.result(timeout=30)
    jsonschema.validate(result.parsed, schema)
    assert json.loads(result.text) == result.parsed
    Review.model_validate(result.parsed)


async def test_bad_requests_leave_nothing_in_redis(producer: Producer, aredis: redis.asyncio.Redis) -> None:
    bad_calls = [
        {"messages": []},
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": [{"role": "user", "content": 3}]},
        {"messages": [{"role": "user", "content": "x"}], "json_schema": {"type": "object"}},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}], "temperature": 9},
        {"messages": [{"role": "user", "content": "x" * 1_100_000}]},
    ]
    for call in bad_calls:
        with pytest.raises(InvalidRequest):
            await producer.enqueue(**call)
    assert await aredis.dbsize() == 0


async def test_a_malformed_payload_fails_alone_and_the_worker_keeps_serving(
    fleet: WorkerFleet, producer: Producer, aredis: redis.asyncio.Redis
) -> None:
    fleet.start(1)
    # Written straight into Redis, past the producer's validation, as a buggy or hostile client could.
    await aredis.set("arq:job:garbage", b"\x80\x04not json at all")
    await aredis.zadd("arq:queue", {"garbage": 1})
    now_ms = int(time.time() * 1000)
    await aredis.set("arq:job:wrong-shape", encode_job({"messages": "hello"}, enqueued_ms=now_ms))
    await aredis.zadd("arq:queue", {"wrong-shape": now_ms})
    envelopes = {
        "no-args": {"t": 1, "f": JOB_FUNCTION, "a": [], "k": {}, "et": now_ms},
        "bad-time": {"t": 1, "f": JOB_FUNCTION, "a": [], "k": {}, "et": "yesterday"},
        "bad-try": {"t": "2", "f": JOB_FUNCTION, "a": [], "k": {}, "et": now_ms},
        "bad-function": {"t": 1, "f": [], "a": [], "k": {}, "et": now_ms},
        "other-function": {"t": 1, "f": "rm_rf", "a": [], "k": {}, "et": now_ms},
    }
    for job_id, envelope in envelopes.items():
        await aredis.set(f"arq:job:{job_id}", serialize(envelope))
        await aredis.zadd("arq:queue", {job_id: 1})
    expected = {
        "garbage": "not JSON",
        "wrong-shape": "messages",
        "no-args": "exactly one",
        "bad-time": "enqueue time",
        "bad-try": "job try",
        "bad-function": "function",
        "other-function": "rm_rf",
    }
    for job_id, reason in expected.items():
        events = await asyncio.wait_for(events_of(producer, job_id), 15)
        assert events[-1].type == "error"
        assert events[-1].kind == "invalid_job"
        assert reason in events[-1].message
        with pytest.raises(JobFailed, match="invalid_job"):
            await producer.job(job_id).result(timeout=5)
    good = await producer.enqueue([{"role": "user", "content": "still there?"}])
    assert (await good.result(timeout=15)).text
    assert fleet.processes[0].popen.poll() is None


@pytest.mark.parametrize(
    ("directive", "kind"),
    [
        ("[[arkq:status=400]]", "bad_request"),
        ("[[arkq:context_overflow=1]]", "context_overflow"),
        ("[[arkq:status=401]]", "auth"),
    ],
)
async def test_llm_errors_end_the_job_with_one_error_event(
    fleet: WorkerFleet, producer: Producer, directive: str, kind: str
) -> None:
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": f"fail {directive}"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=15)
    assert failed.value.kind == kind and not failed.value.retryable
    events = await events_of(producer, job.id)
    assert [event.type for event in events] == ["started", "error"]
    assert events[-1].kind == kind


async def emulator_stats(base_url: str) -> dict[str, int]:
    async with httpx2.AsyncClient() as client:
        response = await client.get(base_url.removesuffix("/v1") + "/stats")
    return response.json()


async def test_a_transient_failure_before_the_first_token_is_retried(
    fleet: WorkerFleet, producer: Producer, fake_llm: str
) -> None:
    fleet.start(1)
    faults_before = (await emulator_stats(fake_llm))["faults"]
    job = await producer.enqueue(
        [{"role": "user", "content": "flaky [[arkq:status=503 retry_after=0 times=1 tokens=21]]"}]
    )
    result = await job.result(timeout=30)
    assert result.finish_reason == "stop" and result.usage["completion_tokens"] == 21
    assert (await emulator_stats(fake_llm))["faults"] == faults_before + 1, "the 503 was served, then retried"
    events = await events_of(producer, job.id)
    assert [event.type for event in events].count("started") == 1, "retried inside the attempt"


async def test_the_same_job_id_runs_once(fleet: WorkerFleet, producer: Producer) -> None:
    messages = [{"role": "user", "content": "once"}]
    first = await producer.enqueue(messages, job_id="idempotent-1")
    again_while_queued = await producer.enqueue(messages, job_id="idempotent-1")
    assert again_while_queued.id == first.id
    assert await producer.redis.zcard("arq:queue") == 1
    fleet.start(1)
    await first.result(timeout=15)
    await producer.enqueue(messages, job_id="idempotent-1")  # after it ended: still not run again
    # A later job finishing shows the worker has been through the queue past any second run.
    await (await producer.enqueue([{"role": "user", "content": "later"}])).result(timeout=15)
    events = await events_of(producer, first.id)
    assert [event.type for event in events] == ["started", *["token"] * (len(events) - 2), "done"]


async def test_reasoning_and_tool_calls_get_their_own_events(fleet: WorkerFleet, producer: Producer) -> None:
    fleet.start(1)
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    job = await producer.enqueue(
        [{"role": "user", "content": "Weather in Paris? [[arkq:reasoning=4]]"}], tools=[weather]
    )
    result = await job.result(timeout=15)
    events = await events_of(producer, job.id)
    assert_complete_sequence(events, job.id)
    reasoning = [event.text for event in events if event.type == "reasoning"]
    assert len(reasoning) == 4 and "".join(reasoning) == result.reasoning
    fragments = [event for event in events if event.type == "tool_call"]
    assert fragments[0].id and fragments[0].name == "get_weather"
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    assert call["function"]["name"] == "get_weather"
    assert call["function"]["arguments"] == "".join(fragment.arguments for fragment in fragments)
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


async def test_a_tool_that_is_not_a_function_definition_is_refused(producer: Producer) -> None:
    with pytest.raises(InvalidRequest, match="tools"):
        await producer.enqueue([{"role": "user", "content": "x"}], tools=[{"name": "get_weather"}])


async def test_an_enqueue_wakes_an_idle_worker_without_waiting_for_its_poll(
    fleet: WorkerFleet, producer: Producer
) -> None:
    fleet.env["ARK_WORKER__POLL_DELAY_S"] = "60"  # the fallback poll alone would take a minute
    fleet.start(1)
    queue = producer.config.queue.name

    async def polled_once_and_listening() -> bool:
        # arq writes its heartbeat at the end of a poll round; the wake-up listener is subscribed once
        # the wake channel has a subscriber.
        heartbeats = await producer.redis.keys(health_check_key(queue, "*"))
        [(_, listeners)] = await producer.redis.pubsub_numsub(wake_channel(queue))
        return bool(heartbeats) and listeners >= 1

    await until(polled_once_and_listening, 10, "the worker to poll once and wait")
    for index in range(3):
        job = await producer.enqueue([{"role": "user", "content": f"wake {index} [[arkq:tokens=3]]"}])
        assert (await job.result(timeout=10)).usage["completion_tokens"] == 3


async def test_sampling_options_reach_the_server(
    fleet: WorkerFleet, producer: Producer, fake_llm: str
) -> None:
    """stop, json_object and the other OpenAI parameters are sent as given: the job's answer is the
    server's answer to the same request asked directly, and differs from one without them."""
    fleet.start(1)
    prompt = "Tell me about the sea."
    messages = [{"role": "user", "content": prompt}]
    plain = await direct_completion(fake_llm, prompt)
    stop = plain.split()[3]
    options = {"stop": [stop], "top_p": 0.9, "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.1}
    job = await producer.enqueue(messages, max_tokens=1024, temperature=0.7, **options)
    async with openai.AsyncOpenAI(base_url=fake_llm, api_key="-", max_retries=0) as client:
        direct = await client.chat.completions.create(
            model="tgi", messages=messages, max_tokens=1024, temperature=0.7, **options
        )
    result = await job.result(timeout=30)
    assert result.text == direct.choices[0].message.content and stop not in result.text
    assert len(result.text) < len(plain)

    as_json = await producer.enqueue(messages, json_object=True, tool_choice="none")
    parsed = (await as_json.result(timeout=30)).parsed
    assert isinstance(parsed, dict)

    with pytest.raises(InvalidRequest, match="top_p"):
        await producer.enqueue(messages, top_p=1.5)
    with pytest.raises(InvalidRequest, match="json_object and json_schema"):
        await producer.enqueue(
            messages,
            json_object=True,
            json_schema={"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        )
