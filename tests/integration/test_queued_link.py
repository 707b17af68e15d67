"""`QueuedModelLink` as a drop-in for `ArkModelLink`, against real processes: every method answers as the
direct link does against the same emulator, failures raise the same `ModelError`, tools round trip, and
a caller that leaves (its task cancelled, a timeout, a stream closed early) frees the server's slot."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx2
import pytest
from redis.asyncio import Redis

from arkq.contract import JobResult
from arkq.errors import JobCancelled, ModelError
from examples.agent import TOOL_SPECS
from model_module import ArkModelLink, Finish, ToolCallDelta
from model_module.ArkModelNew import AIMessage, QueuedModelLink, SystemMessage, ToolMessage, UserMessage
from producer import Producer
from tests.servers import WorkerFleet, ark_env, start_fake_llm
from tests.waiting import until
from tests.worker_stand_in import STARTED, cancel_requested, publish, queued_job, token

ROOT = Path(__file__).resolve().parents[2]
HELLO = [SystemMessage(content="You are helpful"), UserMessage(content="Say hello")]
#: How often a worker looks for cancels (`worker.lease_renew_s`, its default).
LEASE_RENEW_S = 0.5


async def emulator_stats(base_url: str) -> dict[str, int]:
    async with httpx2.AsyncClient() as client:
        return (await client.get(base_url.removesuffix("/v1") + "/stats")).json()


@pytest.fixture
def own_llm(tmp_path: Path) -> Iterator[str]:
    """An emulator for one test, whose counters no other test touches."""
    process, base_url = start_fake_llm(tmp_path, "--itl-ms", "2")
    yield base_url
    process.stop()


def without_call_ids(events: list[Any]) -> list[Any]:
    """Stream events with tool call IDs blanked: the server draws a new one for every call."""
    return [
        ToolCallDelta(e.index, "id" if e.id else None, e.name, e.arguments)
        if isinstance(e, ToolCallDelta)
        else e
        for e in events
    ]


# -- the same answers -----------------------------------------------------------------------------------


async def test_every_method_answers_as_the_direct_link(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    async with ArkModelLink(base_url=fake_llm) as direct, QueuedModelLink(redis_url=redis_url) as queued:
        answer = await direct.generate_response(HELLO)
        assert answer and await queued.generate_response(HELLO) == answer
        assert await queued.make_llm_call(HELLO, None) == answer
        assert "".join([text async for text in queued.generate_stream(HELLO)]) == answer
        pieces = await queued.make_llm_call(HELLO, None, stream=True)
        assert not isinstance(pieces, str)
        assert "".join([text async for text in pieces]) == answer
        direct_events = [event async for event in direct.stream(HELLO, max_tokens=5, temperature=0)]
        queued_events = [event async for event in queued.stream(HELLO, max_tokens=5, temperature=0)]
        assert queued_events == direct_events and direct_events[-1] == Finish(
            "length", direct_events[-1].usage
        )
        schema = {"type": "json_schema", "json_schema": {"name": "greeting", "schema": {"type": "object"}}}
        assert await queued.generate_response(HELLO, schema) == await direct.generate_response(HELLO, schema)


async def test_tool_calls_round_trip_through_the_queue_as_through_the_direct_link(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    asked = [UserMessage(content="What is the weather in Paris?")]
    async with ArkModelLink(base_url=fake_llm) as direct, QueuedModelLink(redis_url=redis_url) as queued:
        transcripts = []
        for llm in (direct, queued):
            events = [event async for event in llm.stream(asked, tools=TOOL_SPECS)]
            assert events[-1].reason == "tool_calls"  # type: ignore[union-attr]
            calls = [event for event in events if isinstance(event, ToolCallDelta)]
            call = {
                "id": calls[0].id,
                "type": "function",
                "function": {"name": calls[0].name, "arguments": "".join(c.arguments for c in calls)},
            }
            context = [
                *asked,
                AIMessage(content=None, tool_calls=[call]),
                ToolMessage(content='{"forecast": "sunny"}', tool_call_id=call["id"]),
            ]
            transcripts.append((without_call_ids(events), await llm.generate_response(context)))
    assert transcripts[0] == transcripts[1]
    assert transcripts[1][1], "the model answered the tool's result with text"


# -- the same failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directive", "kind", "status_code"),
    [
        ("[[arkq:status=400]]", "bad_request", 400),
        ("[[arkq:status=401]]", "auth", 401),
        ("[[arkq:context_overflow=1]]", "context_overflow", 400),
        ("[[arkq:status=429 retry_after=0]]", "rate_limit", 429),
        ("[[arkq:status=503]]", "server_error", 503),
        ("[[arkq:stream_error=500]]", "server_error", 500),
        ("[[arkq:html=1]]", "bad_response", 200),
    ],
)
async def test_a_failed_job_raises_the_direct_links_model_error(
    fleet: WorkerFleet, redis_url: str, fake_llm: str, directive: str, kind: str, status_code: int
) -> None:
    retries = {"max_retries": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    fleet.env.update({f"ARK_LLM__{name.upper()}": str(value) for name, value in retries.items()})
    fleet.start(1)
    messages = [UserMessage(content=f"fail {directive}")]
    failures = []
    async with (
        ArkModelLink(base_url=fake_llm, **retries) as direct,
        QueuedModelLink(redis_url=redis_url) as queued,
    ):
        for llm in (direct, queued):
            with pytest.raises(ModelError) as raised:
                await llm.generate_response(messages)
            failures.append(raised.value)
    through_direct, through_queue = failures
    assert (through_queue.kind, through_queue.status_code, through_queue.retryable) == (
        through_direct.kind,
        through_direct.status_code,
        through_direct.retryable,
    )
    assert (through_queue.kind, through_queue.status_code) == (kind, status_code)


async def test_a_job_cancelled_elsewhere_raises_job_cancelled(fleet: WorkerFleet, redis_url: str) -> None:
    fleet.start(1)
    async with QueuedModelLink(redis_url=redis_url) as llm, Producer(redis_url) as producer:
        call = asyncio.create_task(
            llm.generate_response([UserMessage(content="long [[arkq:tokens=2000 itl_ms=5]]")])
        )
        await until(lambda: running_job(producer.redis), 30, "the job running")
        job_id = await running_job(producer.redis)
        assert await producer.job(job_id).cancel() == "cancelling"
        with pytest.raises(JobCancelled) as raised:
            await asyncio.wait_for(call, 30)
    assert raised.value.job_id == job_id and raised.value.result.status == "cancelled"


async def running_job(redis: Redis) -> str | None:
    """The ID of the one running job (its lease is held), None while there is none."""
    leases = await redis.keys("ark:lease:*")
    return leases[0].decode().removeprefix("ark:lease:") if leases else None


# -- a caller that leaves -------------------------------------------------------------------------------

ENDLESS = [UserMessage(content="endless [[arkq:tokens=2000 itl_ms=10]]")]


Streaming = Callable[[], Awaitable[bool]]


async def leave_by_cancelling(llm: QueuedModelLink, streaming: Streaming) -> None:
    async def agent() -> None:
        async for _ in llm.generate_stream(ENDLESS):
            pass

    task = asyncio.create_task(agent())
    await until(streaming, 30, "the answer streaming")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def leave_by_cancelling_twice(llm: QueuedModelLink, streaming: Streaming) -> None:
    """A server shutting down cancels its handlers, then cancels them again: the job's cancel, once
    begun, still reaches Redis."""

    async def agent() -> None:
        async for _ in llm.stream(ENDLESS):
            pass

    task = asyncio.create_task(agent())
    await until(streaming, 30, "the answer streaming")
    task.cancel()
    await asyncio.sleep(0)  # the task is now cancelling its job ...
    task.cancel()  # ... and is cancelled again
    with pytest.raises(asyncio.CancelledError):
        await task


async def leave_by_timeout(llm: QueuedModelLink, streaming: Streaming) -> None:
    async def expire_once_streaming(deadline: asyncio.Timeout) -> None:
        await until(streaming, 30, "the answer streaming")
        deadline.reschedule(asyncio.get_running_loop().time())

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as deadline:
            expiring = asyncio.create_task(expire_once_streaming(deadline))
            await llm.generate_response(ENDLESS)
    await expiring


async def leave_by_closing_the_stream(llm: QueuedModelLink, streaming: Streaming) -> None:
    async with asyncio.timeout(30), aclosing(llm.generate_stream(ENDLESS)) as texts:
        async for _ in texts:
            if await streaming():
                break  # an agent that has heard enough


@pytest.mark.parametrize(
    "leave",
    [leave_by_cancelling, leave_by_cancelling_twice, leave_by_timeout, leave_by_closing_the_stream],
    ids=["task-cancelled", "cancelled-twice", "timeout", "stream-closed"],
)
async def test_a_caller_leaving_mid_stream_frees_the_servers_slot(
    fleet: WorkerFleet,
    redis_url: str,
    own_llm: str,
    leave: Callable[[QueuedModelLink, Streaming], Awaitable[None]],
) -> None:
    fleet.env["ARK_LLM__BASE_URL"] = own_llm
    fleet.env["ARK_WORKER__LEASE_RENEW_S"] = str(LEASE_RENEW_S)
    fleet.start(1)

    async def streaming() -> bool:  # the emulator counts tokens at a request's end, its requests at once
        return (await emulator_stats(own_llm))["active"] == 1

    async def slot_freed() -> bool:
        stats = await emulator_stats(own_llm)
        return stats["aborted"] == 1 and stats["active"] == 0

    async with QueuedModelLink(redis_url=redis_url) as llm, Producer(redis_url) as producer:
        await leave(llm, streaming)
        left_at = time.monotonic()
        # The worker sees the cancel at its next renewal, then aborts the request (generous bound).
        await until(slot_freed, LEASE_RENEW_S + 10, "the emulator's slot freed")
        freed_after = time.monotonic() - left_at
        (stored,) = await producer.redis.keys("ark:result:*")
        result = JobResult.model_validate_json(await producer.redis.get(stored))
    assert result.status == "cancelled"
    assert (await emulator_stats(own_llm))["requests"] == 1
    assert (await emulator_stats(own_llm))["completion_tokens"] < 2000, "the generation stopped"
    assert freed_after < LEASE_RENEW_S + 10


async def test_a_cancel_begun_survives_a_second_cancellation(redis_url: str) -> None:
    """The same against a Redis alone, the test playing the worker: nothing but the cancel runs."""
    async with Producer(redis_url) as producer, QueuedModelLink(producer=producer) as llm:
        call = asyncio.create_task(llm.generate_response(HELLO))
        job_id, _ = await queued_job(producer.redis)
        await publish(producer.redis, job_id, STARTED, token("so far"))
        call.cancel()
        await asyncio.sleep(0)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await until(lambda: cancel_requested(producer.redis, job_id), 5, "the job cancelled")


# -- its own connections --------------------------------------------------------------------------------

NEVER_CLOSED = """\
import asyncio
import gc
import sys

from model_module.ArkModelNew import QueuedModelLink, UserMessage

messages = [UserMessage(content="Say hello")]
shared = QueuedModelLink()  # module-level: it outlives each loop


async def dropped_inside_the_loop() -> None:
    llm = QueuedModelLink()
    print(await llm.generate_response(messages))
    del llm
    gc.collect()
    await asyncio.sleep(0.1)


async def with_the_shared_link() -> None:
    print(await shared.generate_response(messages))
    async for text in shared.generate_stream(messages):
        print(text, end="")
    print()


asyncio.run(dropped_inside_the_loop())
asyncio.run(with_the_shared_link())
asyncio.run(with_the_shared_link())  # a second loop: the link opens new connections there
"""


def test_a_link_nobody_closes_leaves_nothing_open(fleet: WorkerFleet, redis_url: str, fake_llm: str) -> None:
    fleet.start(1)
    done = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-c", textwrap.dedent(NEVER_CLOSED)],
        cwd=ROOT,
        env=ark_env(redis_url, fake_llm),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    first, second, third, fourth, fifth = done.stdout.splitlines()
    assert first == second == third == fourth == fifth and first
