"""Injected faults, aborts, disconnects and auth, as seen by the official client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import httpx2
import openai
import pytest

from fake_llm import FakeLLMServer, running_fake_llm
from fake_llm.directives import DirectiveError, FaultBudget, parse_directives
from tests.waiting import until


def say(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


async def drain(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


async def wait_for(predicate: Any, timeout: float = 3.0) -> None:
    await until(predicate, timeout, "the emulator's stats")


@pytest.mark.parametrize("stream", [False, True])
async def test_status_fault_with_retry_after(
    client: openai.AsyncOpenAI, srv: FakeLLMServer, stream: bool
) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(
            model="tgi", messages=say("hi [[arkq:status=503 retry_after=7]]"), stream=stream
        )
    error = caught.value
    assert error.status_code == 503
    assert error.response.headers["Retry-After"] == "7"
    assert error.body == {
        "object": "error",
        "message": "The request queue is full.",
        "type": "503",
        "param": None,
        "code": 503,
    }
    assert (srv.stats.faults, srv.stats.errors, srv.stats.completed) == (1, 1, 0)


async def test_other_status_faults(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(model="tgi", messages=say("[[arkq:status=400]]"))
    assert bad.value.body["type"] == "BadRequestError"  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as internal:
        await client.chat.completions.create(model="tgi", messages=say("[[arkq:status=500]]"))
    assert internal.value.body["message"] == "Injected fault"  # type: ignore[index]
    with pytest.raises(openai.AuthenticationError) as denied:
        await client.chat.completions.create(model="tgi", messages=say("[[arkq:status=401]]"))
    assert denied.value.response.json() == {"error": "Unauthorized"}


async def test_times_limits_a_fault_to_the_first_requests(
    client: openai.AsyncOpenAI, srv: FakeLLMServer
) -> None:
    messages = say("flaky [[arkq:status=503 times=2 tokens=3]]")
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="tgi", messages=messages)
    ok = await client.chat.completions.create(model="tgi", messages=messages)
    assert len((ok.choices[0].message.content or "").split()) == 3
    # A different directive text has its own budget.
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model="tgi", messages=say("[[arkq:status=503 times=1]]"))
    assert (srv.stats.requests, srv.stats.faults, srv.stats.completed) == (4, 3, 1)


async def post_chat(srv: FakeLLMServer, directive: str, *, stream: bool) -> tuple[int, str, str]:
    """Status, content type and body of one raw chat request: what a client gets before parsing."""
    body = {"messages": say(f"hi [[arkq:{directive}]]"), "stream": stream}
    async with aiohttp.ClientSession() as http, http.post(f"{srv.base_url}/chat/completions", json=body) as r:
        return r.status, r.headers["Content-Type"], await r.text()


@pytest.mark.parametrize("stream", [False, True])
async def test_html_answers_a_login_page_with_200(srv: FakeLLMServer, stream: bool) -> None:
    status, content_type, page = await post_chat(srv, "html=1", stream=stream)
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<input name="password" type="password"' in page
    assert (srv.stats.requests, srv.stats.faults, srv.stats.completed, srv.stats.errors) == (1, 1, 0, 0)


async def test_flip_stream_answers_a_stream_with_json_and_a_call_with_a_stream(srv: FakeLLMServer) -> None:
    status, content_type, body = await post_chat(srv, "flip_stream=1 tokens=3", stream=True)
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    completion = json.loads(body)
    assert completion["object"] == "chat.completion"
    assert len(completion["choices"][0]["message"]["content"].split()) == 3
    status, content_type, body = await post_chat(srv, "flip_stream=1 tokens=3", stream=False)
    assert (status, content_type) == (200, "text/event-stream; charset=utf-8")
    assert body.startswith("data: {") and body.endswith("data: [DONE]\n\n")
    assert (srv.stats.requests, srv.stats.faults, srv.stats.completed) == (2, 2, 2)


async def test_times_limits_the_wrong_answers_too(srv: FakeLLMServer) -> None:
    assert (await post_chat(srv, "html=1 times=1", stream=True))[1].startswith("text/html")
    assert (await post_chat(srv, "html=1 times=1", stream=True))[1].startswith("text/event-stream")
    assert (await post_chat(srv, "flip_stream=1 times=1", stream=False))[1].startswith("text/event-stream")
    assert (await post_chat(srv, "flip_stream=1 times=1", stream=False))[1].startswith("application/json")
    assert srv.stats.faults == 2


async def test_a_path_the_server_lacks_gets_fastapis_404_and_is_counted(srv: FakeLLMServer) -> None:
    """SGLang is a FastAPI app: a base URL without /v1 gets `{"detail":"Not Found"}`, never the chat."""
    async with aiohttp.ClientSession() as http, http.post(f"{srv.url}/chat/completions", json={}) as r:
        assert (r.status, await r.json()) == (404, {"detail": "Not Found"})
    async with aiohttp.ClientSession() as http, http.get(f"{srv.base_url}/models/nope") as r:
        assert r.status == 404  # a known route's own 404 (no such model) is not a missing path
    assert (srv.stats.not_found, srv.stats.requests) == (1, 0)


async def test_in_stream_error_after_some_tokens(client: openai.AsyncOpenAI, srv: FakeLLMServer) -> None:
    stream = await client.chat.completions.create(
        model="tgi", messages=say("[[arkq:stream_error=503 error_after=3 tokens=10]]"), stream=True
    )
    seen: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
    assert len([s for s in seen if s]) == 3
    assert caught.value.message == "The request queue is full."
    assert caught.value.body == {
        "object": "error",
        "message": "The request queue is full.",
        "type": "SERVICE_UNAVAILABLE",
        "param": None,
        "code": 503,
    }
    assert (srv.stats.faults, srv.stats.errors) == (1, 1)


async def test_in_stream_error_wire_format(srv: FakeLLMServer) -> None:
    body = {
        "messages": say("[[arkq:stream_error=500]]"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with aiohttp.ClientSession() as http, http.post(f"{srv.base_url}/chat/completions", json=body) as r:
        assert r.status == 200
        events = (await r.read()).decode().split("\n\n")
    assert events[0] == (
        'data: {"error": {"object": "error", "message": "Injected fault", '
        '"type": "INTERNAL_SERVER_ERROR", "param": null, "code": 500}}'
    )
    assert '"choices":[],"usage":' in events[1]
    assert events[2:] == ["data: [DONE]", ""]


async def test_stream_error_on_a_non_streamed_request_is_an_http_error(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(
            model="tgi", messages=say("[[arkq:stream_error=503 error_after=2]]")
        )
    assert caught.value.status_code == 503


@pytest.mark.parametrize("stream", [False, True])
async def test_cut_after_drops_the_connection(
    client: openai.AsyncOpenAI, srv: FakeLLMServer, stream: bool
) -> None:
    seen: list[Any] = []
    with pytest.raises(openai.APIConnectionError):
        if stream:
            async for chunk in await client.chat.completions.create(
                model="tgi", messages=say("[[arkq:cut_after=4 tokens=20]]"), stream=True
            ):
                seen.append(chunk)
        else:
            await client.chat.completions.create(model="tgi", messages=say("[[arkq:cut_after=4 tokens=20]]"))
    if stream:
        role, *tokens = seen
        assert role.choices[0].delta.role == "assistant"
        assert len(tokens) == 4 and all(c.choices[0].delta.content for c in tokens)
        assert all(c.choices[0].finish_reason is None for c in seen)
    assert srv.stats.faults == 1


async def test_context_overflow(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(
            model="tgi", messages=say("[[arkq:context_overflow=1]]"), stream=True
        )
    assert caught.value.body["message"] == (  # type: ignore[index]
        "The input (32769 tokens) is longer than the model's context length (32768 tokens)."
    )


async def test_natural_context_limits() -> None:
    async with (
        running_fake_llm(context_length=64) as srv,
        openai.AsyncOpenAI(base_url=srv.base_url, api_key="-", max_retries=0) as client,
    ):
        with pytest.raises(openai.BadRequestError, match=r"The input \(\d+ tokens\) is longer than"):
            await client.chat.completions.create(model="tgi", messages=say("word " * 80))
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="tgi", messages=say("one two three"), max_tokens=60)
        assert caught.value.body["message"].startswith(  # type: ignore[index]
            "Requested token count exceeds the model's maximum context length of 64 tokens. "
            "You requested a total of 70 tokens: 10 tokens from the input messages and 60 tokens"
        )
        with pytest.raises(openai.BadRequestError, match="max_completion_tokens is too large: 65"):
            await client.chat.completions.create(model="tgi", messages=say("hi"), max_tokens=65)


async def test_abort_request_ends_the_stream_with_abort(
    client: openai.AsyncOpenAI, srv: FakeLLMServer
) -> None:
    stream = await client.chat.completions.create(
        model="tgi",
        messages=say("[[arkq:tokens=200 itl_ms=20]]"),
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"rid": "job-1"},
    )
    chunks = []
    async with aiohttp.ClientSession() as http:
        async for chunk in stream:
            chunks.append(chunk)
            if len(chunks) == 4:  # the role chunk and three tokens
                async with http.post(f"{srv.url}/abort_request", json={"rid": "job-1"}) as r:
                    assert r.status == 200
        async with http.post(f"{srv.url}/abort_request", json={"rid": "no-such-rid"}) as r:
            assert r.status == 200
    finish, usage = chunks[-2:]
    assert finish.id == "job-1"
    assert finish.choices[0].finish_reason == "abort"
    assert usage.usage is not None and 3 <= usage.usage.completion_tokens < 10
    assert (srv.stats.aborted, srv.stats.completed, srv.stats.active) == (1, 0, 0)


async def test_abort_request_on_a_non_streamed_request(
    client: openai.AsyncOpenAI, srv: FakeLLMServer
) -> None:
    call = asyncio.create_task(
        client.chat.completions.create(
            model="tgi", messages=say("[[arkq:tokens=100 ttft_ms=20 itl_ms=20]]"), extra_body={"rid": "slow"}
        )
    )
    await wait_for(lambda: srv.stats.active == 1)
    # A fixed pause: a non-streamed answer's length is the time it ran (20 ms to the first token, 20 ms
    # a token), so the abort must come some tokens' time after the start; there is nothing to poll.
    await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as http, http.post(f"{srv.url}/abort_request", json={"rid": "slow"}):
        pass
    result = await call
    assert result.choices[0].finish_reason == "abort"
    assert 0 < len((result.choices[0].message.content or "").split()) < 100


async def test_a_disconnected_request_holds_its_slot_until_aborted(srv: FakeLLMServer) -> None:
    """As reported of SGLang: closing the stream alone does not stop generation; an abort does."""
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="-", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="tgi", messages=say("[[arkq:tokens=500 itl_ms=5]]"), stream=True, extra_body={"rid": "gone"}
        )
        async for _ in stream:
            break
        await stream.close()
        await wait_for(lambda: srv.stats.disconnected == 1)
        assert (srv.stats.active, srv.stats.completed, srv.stats.aborted) == (1, 0, 0)
        await client.post("/../abort_request", body={"rid": "gone"}, cast_to=httpx2.Response)
    await wait_for(lambda: srv.stats.active == 0)
    assert srv.stats.aborted == 1


async def test_a_disconnected_request_ends_by_itself_when_its_answer_is_done(srv: FakeLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="-", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="tgi", messages=say("[[arkq:tokens=30 itl_ms=5]]"), stream=True
        )
        async for _ in stream:
            break
        await stream.close()
    await wait_for(lambda: srv.stats.disconnected == 1 and srv.stats.active == 0)
    assert srv.stats.aborted == 0


async def test_pacing_follows_ttft_and_itl() -> None:
    async with (
        running_fake_llm(ttft_ms=80, itl_ms=10) as srv,
        openai.AsyncOpenAI(base_url=srv.base_url, api_key="-", max_retries=0) as client,
    ):
        started = time.monotonic()
        stream = await client.chat.completions.create(
            model="tgi", messages=say("[[arkq:tokens=6]]"), stream=True
        )
        arrivals = [time.monotonic() - started async for _ in stream]
        assert arrivals[0] >= 0.075
        # Pacing is by schedule (a late first token does not push the others back, the gaps close up),
        # so the property is that no token comes before its time: the sixth at 80 + 5 x 10 ms.
        assert arrivals[-1] >= 0.125
        started = time.monotonic()
        await client.chat.completions.create(
            model="tgi", messages=say("[[arkq:tokens=3 ttft_ms=0 itl_ms=0]]")
        )
        assert time.monotonic() - started < 0.07


async def test_api_key_is_required_except_for_health() -> None:
    async with running_fake_llm(api_key="sekret") as srv:
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0) as client:
            with pytest.raises(openai.AuthenticationError) as caught:
                await client.chat.completions.create(model="tgi", messages=say("hi"))
            assert caught.value.response.json() == {"error": "Unauthorized"}
        async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="sekret", max_retries=0) as client:
            assert (await client.chat.completions.create(model="tgi", messages=say("hi"))).choices
        async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/health") as health:
            assert health.status == 200


async def test_stats_endpoint(client: openai.AsyncOpenAI, srv: FakeLLMServer) -> None:
    await client.chat.completions.create(model="tgi", messages=say("hi [[arkq:tokens=5]]"))
    async with aiohttp.ClientSession() as http, http.get(f"{srv.url}/stats") as r:
        stats = await r.json()
    assert stats == {
        "requests": 1,
        "active": 0,
        "completed": 1,
        "aborted": 0,
        "disconnected": 0,
        "errors": 0,
        "faults": 0,
        "completion_tokens": 5,
        "not_found": 0,
        "pacing": "per-request",
        "batch": 0,
        "steps": 0,
        "prefills": 0,
    }


async def test_malformed_directive_is_a_bad_request(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown arkq directive key 'bogus'"):
        await client.chat.completions.create(model="tgi", messages=say("[[arkq:bogus=1]]"))


def test_directive_parsing_and_budget() -> None:
    directives = parse_directives(["a [[arkq:tokens=5 status=503]] b", "[[arkq:tokens=9 times=1]]"])
    assert (directives.tokens, directives.status, directives.times) == (9, 503, 1)
    assert directives.key == "[[arkq:tokens=5 status=503]] [[arkq:tokens=9 times=1]]"
    budget = FaultBudget()
    assert budget.apply(directives).status == 503
    after = budget.apply(directives)
    assert (after.status, after.tokens) == (None, 9)
    with pytest.raises(DirectiveError):
        parse_directives(["[[arkq:tokens=x]]"])
    with pytest.raises(DirectiveError):
        parse_directives(["[[arkq:status=200]]"])
    wrong = parse_directives(["[[arkq:html=1 flip_stream=1 tokens=2 times=1]]"])
    assert (wrong.html, wrong.flip_stream, wrong.has_fault) == (True, True, True)
    spent = budget.apply(wrong), budget.apply(wrong)
    assert [(d.html, d.flip_stream, d.tokens) for d in spent] == [(True, True, 2), (False, False, 2)]
