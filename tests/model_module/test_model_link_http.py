"""ArkModelLink with the official client over real HTTP against the SGLang emulator `fake_llm`.

Faults are asked for in the prompt (`[[arkq:...]]`); the emulator's counters tell how many requests the
link really sent, which is how the retry policy is checked from the outside.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest

from fake_llm import running_fake_llm
from model_module import (
    ArkModelLink,
    Finish,
    ModelError,
    ReasoningDelta,
    StreamEvent,
    SystemMessage,
    TextDelta,
    ToolCallDelta,
    UserMessage,
)
from tests.waiting import until


@pytest.fixture
async def srv() -> AsyncIterator[Any]:
    async with running_fake_llm(ttft_ms=0, itl_ms=0) as server:
        yield server


@pytest.fixture
async def llm(srv: Any) -> AsyncIterator[ArkModelLink]:
    async with ArkModelLink(
        model_name="fake",
        base_url=srv.base_url,
        max_retries=2,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        read_timeout_s=5,
    ) as link:
        yield link


def ask(text: str) -> list[Any]:
    return [SystemMessage(content="You are terse."), UserMessage(content=text)]


def requests(srv: Any) -> int:
    return int(srv.stats.requests)


async def events_of(llm: ArkModelLink, messages: list[Any], **kwargs: Any) -> list[StreamEvent]:
    return [event async for event in llm.stream(messages, **kwargs)]


async def test_streamed_text_equals_non_streamed_text(llm: ArkModelLink) -> None:
    messages = ask("Tell me something. [[arkq:tokens=40]]")
    whole = await llm.generate_response(messages)
    events = await events_of(llm, messages)
    streamed = "".join(event.text for event in events if isinstance(event, TextDelta))
    assert whole
    assert streamed == whole
    assert "".join([piece async for piece in llm.generate_stream(messages)]) == whole
    assert await llm.make_llm_call(messages, None) == whole
    pieces = await llm.make_llm_call(messages, None, stream=True)
    assert not isinstance(pieces, str)
    assert "".join([piece async for piece in pieces]) == whole


async def test_finish_carries_reason_and_usage(llm: ArkModelLink) -> None:
    events = await events_of(llm, ask("Count. [[arkq:tokens=12]]"))
    *deltas, finish = events
    assert isinstance(finish, Finish)
    assert sum(isinstance(event, Finish) for event in events) == 1
    assert finish.reason == "stop"
    assert finish.usage is not None
    assert finish.usage["completion_tokens"] == 12
    assert finish.usage["prompt_tokens"] > 0
    assert deltas and all(isinstance(event, TextDelta) for event in deltas)

    *_, capped = await events_of(llm, ask("Count. [[arkq:tokens=50]]"), max_tokens=5)
    assert isinstance(capped, Finish)
    assert capped.reason == "length"
    assert capped.usage is not None
    assert capped.usage["completion_tokens"] == 5


async def test_reasoning_deltas_come_first(llm: ArkModelLink) -> None:
    events = await events_of(llm, ask("Think first. [[arkq:reasoning=6 tokens=10]]"))
    kinds = [type(event) for event in events]
    assert kinds.count(ReasoningDelta) >= 1
    assert TextDelta in kinds
    assert max(i for i, kind in enumerate(kinds) if kind is ReasoningDelta) < kinds.index(TextDelta)
    assert kinds[-1] is Finish


async def test_tool_call_deltas(llm: ArkModelLink) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    events = await events_of(llm, ask("Weather in Paris?"), tools=tools)
    calls = [event for event in events if isinstance(event, ToolCallDelta)]
    assert calls
    first = calls[0]
    assert first.id and first.name == "get_weather"
    assert all(call.id is None and call.name is None for call in calls[1:])
    arguments = json.loads("".join(call.arguments for call in calls if call.index == first.index))
    jsonschema.validate(arguments, tools[0]["function"]["parameters"])  # type: ignore[index]
    assert events[-1] == Finish("tool_calls", events[-1].usage)  # type: ignore[union-attr]


async def test_503_with_retry_after_is_retried_before_the_first_delta(llm: ArkModelLink, srv: Any) -> None:
    started = time.monotonic()
    events = await events_of(llm, ask("Busy? [[arkq:status=503 retry_after=1 times=1 tokens=8]]"))
    elapsed = time.monotonic() - started
    assert isinstance(events[-1], Finish)
    assert any(isinstance(event, TextDelta) for event in events)
    assert requests(srv) == 2
    assert elapsed >= 1.0  # the header's 1 s, not the 0.01-0.05 s backoff


async def test_context_overflow_is_not_retried(llm: ArkModelLink, srv: Any) -> None:
    with pytest.raises(ModelError) as caught:
        await events_of(llm, ask("Huge. [[arkq:context_overflow=1]]"))
    assert caught.value.kind == "context_overflow"
    assert caught.value.status_code == 400
    assert not caught.value.retryable
    assert requests(srv) == 1
    with pytest.raises(ModelError) as again:
        await llm.generate_response(ask("Huge. [[arkq:context_overflow=1]]"))
    assert again.value.kind == "context_overflow"
    assert requests(srv) == 2


async def test_in_stream_error_after_first_delta_is_raised_without_retry(llm: ArkModelLink, srv: Any) -> None:
    seen: list[StreamEvent] = []
    with pytest.raises(ModelError) as caught:
        async for event in llm.stream(ask("Fail midway. [[arkq:stream_error=503 error_after=3 tokens=20]]")):
            seen.append(event)
    assert seen and all(isinstance(event, TextDelta) for event in seen)
    assert caught.value.kind == "server_error"
    assert caught.value.status_code == 503
    assert requests(srv) == 1


async def test_in_stream_error_before_first_delta_is_retried(llm: ArkModelLink, srv: Any) -> None:
    events = await events_of(llm, ask("Queue full. [[arkq:stream_error=503 error_after=0 times=1 tokens=5]]"))
    assert isinstance(events[-1], Finish)
    assert requests(srv) == 2


async def test_cut_stream_is_a_stream_error(llm: ArkModelLink, srv: Any) -> None:
    seen: list[StreamEvent] = []
    with pytest.raises(ModelError) as caught:
        async for event in llm.stream(ask("Cut. [[arkq:cut_after=4 tokens=20]]")):
            seen.append(event)
    assert seen
    assert (caught.value.kind, caught.value.retryable) == ("stream", True)
    assert requests(srv) == 1


async def test_connection_refused_after_max_retries(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # nothing listens on `port` now
    caplog.set_level(logging.WARNING, logger="model_module.link")
    async with ArkModelLink(
        base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02
    ) as link:
        with pytest.raises(ModelError) as caught:
            await events_of(link, ask("anyone?"))
        assert (caught.value.kind, caught.value.retryable) == ("connect", True)
        assert len([r for r in caplog.records if "retry" in r.getMessage()]) == 2
        with pytest.raises(ModelError) as again:
            await link.generate_response(ask("anyone?"))
        assert again.value.kind == "connect"


async def test_json_schema_response_validates(llm: ArkModelLink) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "rating": {"type": "integer", "minimum": 1, "maximum": 10},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["title", "rating"],
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "movie_review", "schema": schema}}
    text = await llm.generate_response(ask("Review a movie."), json_schema=response_format)
    jsonschema.validate(json.loads(text), schema)
    pieces = await llm.make_llm_call(ask("Review a movie."), response_format, stream=True)
    assert not isinstance(pieces, str)
    assert json.loads("".join([piece async for piece in pieces])) == json.loads(text)


async def test_leaving_the_stream_early_disconnects(llm: ArkModelLink, srv: Any) -> None:
    events = llm.stream(ask("Long. [[arkq:tokens=500 itl_ms=5]]"), rid="job-early-exit")
    async for event in events:
        assert isinstance(event, TextDelta)
        break
    await events.aclose()
    await until(lambda: srv.stats.disconnected >= 1, 1, "the emulator to see the disconnect")
    assert srv.stats.disconnected == 1
    assert srv.stats.completed == 0


async def test_a_timed_out_request_is_aborted_before_its_retry(srv: Any) -> None:
    async with ArkModelLink(
        base_url=srv.base_url, max_retries=1, backoff_base_s=0.01, backoff_max_s=0.05, read_timeout_s=0.3
    ) as link:
        with pytest.raises(ModelError) as caught:
            await events_of(link, ask("slow [[arkq:ttft_ms=3000]]"), rid="slow-1")
    assert caught.value.kind == "timeout"
    assert requests(srv) == 2
    assert srv.stats.aborted == 1, "the first request was aborted before the retry"
