"""Streams that survive a crash without starting over: an attempt that takes over after output was
published continues it (SGLang's continue_final_message), and readers see one unbroken answer; where
continuing is not sound, the attempt starts over after a `reset`, as before."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import openai
import pytest

from arkq.contract import StartedEvent, parse_event
from arkq.keys import event_log_key
from producer import Job, Producer
from tests.servers import WorkerFleet, worker_pid
from tests.streams import assert_one_end, text_of_last_attempt
from tests.waiting import until

TOKENS = 600
FAST = {
    "ARK_WORKER__LEASE_S": "2",
    "ARK_WORKER__LEASE_RENEW_S": "0.2",
    "ARK_LLM__BACKOFF_BASE_S": "0.1",
}


def once() -> str:
    """A tiny delay, different each time: the emulator counts `times=N` per directive text, and this
    makes the text a test's own."""
    return f"0.{time.time_ns()}"


def prepared(fleet: WorkerFleet, **settings: str) -> WorkerFleet:
    fleet.env.update(FAST)
    fleet.env.update({f"ARK_{key.upper()}": value for key, value in settings.items()})
    return fleet


async def uninterrupted(fake_llm: str, text: str, **request: Any) -> str:
    """The answer the emulator gives the same words (directives do not change it) in one go."""
    async with openai.AsyncOpenAI(base_url=fake_llm, api_key="-", max_retries=0) as llm:
        answer = await llm.chat.completions.create(
            model="m", messages=[{"role": "user", "content": text}], **request
        )
    return answer.choices[0].message.content or ""


async def follow(job: Job) -> list:
    """A reader that follows the job from its enqueue to its end."""
    return [event async for event in job.events()]


def assert_continued(events: list, attempts: int) -> None:
    assert_one_end(events)
    assert "reset" not in [event.type for event in events], "no output was taken back"
    starts = [event for event in events if isinstance(event, StartedEvent)]
    assert [start.attempt for start in starts] == list(range(1, attempts + 1))
    assert not starts[0].continues and all(start.continues for start in starts[1:])


async def test_a_job_whose_worker_is_killed_three_times_streams_one_unbroken_answer(
    fleet: WorkerFleet, producer: Producer, fake_llm: str
) -> None:
    prepared(fleet).start(1)
    prompt = f"A long story {time.time_ns()}. [[arkq:tokens={TOKENS} itl_ms=8]]"
    job = await producer.enqueue([{"role": "user", "content": prompt}], max_tokens=TOKENS + 10)
    reader = asyncio.create_task(follow(job))
    for kill, after_tokens in enumerate((80, 230, 380), start=1):

        async def running_attempt(attempt: int = kill, tokens: int = after_tokens) -> bool:
            events = await job_events_now(producer, job.id)
            starts = [event for event in events if event.type == "started"]
            return len(starts) == attempt and sum(event.type == "token" for event in events) >= tokens

        await until(running_attempt, 60, f"attempt {kill} streaming past {after_tokens} tokens")
        started = [event for event in await job_events_now(producer, job.id) if event.type == "started"][-1]
        os.kill(worker_pid(started.worker), signal.SIGKILL)
        fleet.start(1)  # as compose would restart it
    events = await asyncio.wait_for(reader, 120)
    assert_continued(events, attempts=4)
    text = "".join(event.text for event in events if event.type == "token")
    expected = await uninterrupted(
        fake_llm, prompt.split("[[")[0] + "[[arkq:tokens=600]]", max_tokens=TOKENS + 10
    )
    assert text == expected and len(text.split()) == TOKENS
    result = await job.result(timeout=10)
    assert result.attempts == 4 and result.text == events[-1].text == text
    assert result.usage is not None and result.usage["completion_tokens"] == TOKENS  # as if uninterrupted


async def job_events_now(producer: Producer, job_id: str) -> list:
    """The events published so far, without waiting for the end."""
    return [parse_event(raw) for raw in await producer.redis.lrange(event_log_key(job_id), 0, -1)]


@pytest.mark.parametrize(
    "fault",
    ["cut_after=150 times=3", "stream_error=503 error_after=150 times=3"],
    ids=["stream cut by the server", "in-stream 503"],
)
async def test_a_stream_failing_three_times_continues_to_the_uninterrupted_answer(
    fleet: WorkerFleet, producer: Producer, fake_llm: str, fault: str
) -> None:
    prepared(fleet).start(1)
    words = f"Once more {time.time_ns()}. "
    job = await producer.enqueue(
        [{"role": "user", "content": f"{words}[[arkq:tokens={TOKENS} itl_ms=1 {fault} ttft_ms={once()}]]"}],
        max_tokens=TOKENS,
    )
    reader = asyncio.create_task(follow(job))
    result = await job.result(timeout=90)
    events = await asyncio.wait_for(reader, 30)
    assert_continued(events, attempts=4)
    expected = await uninterrupted(fake_llm, f"{words}[[arkq:tokens={TOKENS}]]", max_tokens=TOKENS)
    assert result.text == text_of_last_attempt(events) == events[-1].text == expected


SCHEMA = {
    "name": "item",
    "schema": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}},
        "required": ["name", "tags"],
    },
}
TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}


@pytest.mark.parametrize(
    ("directives", "request_", "settings", "why"),
    [
        (
            "cut_after=3",
            {"json_schema": {"type": "json_schema", "json_schema": SCHEMA}},
            {},
            "schema-constrained",
        ),
        ("reasoning=12 cut_after=5", {}, {}, "reasoning"),
        ("cut_after=3", {"tools": [TOOL]}, {}, "tool call"),
        ("cut_after=5 refuse_continue=1", {}, {}, "refused to continue"),
        ("cut_after=5", {}, {"worker__resume_partial": "false"}, "worker.resume_partial is off"),
    ],
    ids=["json schema", "inside reasoning", "inside a tool call", "server refuses", "turned off"],
)
async def test_where_continuing_is_not_sound_the_attempt_starts_over_after_a_reset(
    fleet: WorkerFleet,
    producer: Producer,
    directives: str,
    request_: dict[str, Any],
    settings: dict[str, str],
    why: str,
) -> None:
    prepared(fleet, **settings).start(1)
    content = f"Fallback. [[arkq:tokens=40 itl_ms=2 times=1 {directives} ttft_ms={once()}]]"
    job = await producer.enqueue([{"role": "user", "content": content}], **request_)
    result = await job.result(timeout=60)
    events = [event async for event in job.events()]
    assert_one_end(events)
    resets = [event for event in events if event.type == "reset"]
    assert len(resets) == 1 and why in resets[0].reason, [event.type for event in events]
    assert f"starts over: {resets[0].reason.split('starts over: ')[1]}" in fleet.logs(), "logged, with why"
    assert result.status == "done" and result.text == text_of_last_attempt(events)
    if "json_schema" in request_:
        assert result.parsed is not None and set(result.parsed) == {"name", "tags"}
