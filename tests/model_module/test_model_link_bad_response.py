"""A misconfigured LLM server, through ArkModelLink against the emulator: a login page, a 404, the wrong
format for the call. Each must end the call at once as `bad_response` (retrying cannot help, and would
hide it behind a backoff), with a message that shows what answered and where; the emulator's counters
prove that exactly one request reached it, although the link may retry twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from fake_llm import FakeLLMServer, running_fake_llm
from model_module import ArkModelLink, ModelError, UserMessage

HINT = "does llm.base_url point at an OpenAI-compatible server"


@pytest.fixture
async def srv() -> AsyncIterator[FakeLLMServer]:
    async with running_fake_llm() as server:
        yield server


def link(base_url: str) -> ArkModelLink:
    return ArkModelLink(
        model_name="m", base_url=base_url, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02
    )


async def call(llm: ArkModelLink, prompt: str, *, stream: bool) -> ModelError:
    """The ModelError that one call (streamed or not) of `prompt` ends with."""
    messages: list[Any] = [UserMessage(content=prompt)]
    with pytest.raises(ModelError) as caught:
        if stream:
            async for _ in llm.stream(messages):
                pass
        else:
            await llm.generate_response(messages)
    return caught.value


def assert_bad_response(error: ModelError, url: str, status: int, *quoted: str) -> None:
    assert (error.kind, error.retryable, error.status_code) == ("bad_response", False, status)
    assert error.message.startswith(f"{url} answered with ")
    assert HINT in error.message
    for text in quoted:
        assert text in error.message, text


@pytest.mark.parametrize("stream", [True, False])
async def test_a_login_page_is_a_bad_response_sent_once(srv: FakeLLMServer, stream: bool) -> None:
    async with link(srv.base_url) as llm:
        error = await call(llm, "hi [[arkq:html=1]]", stream=stream)
    expected = "not a text/event-stream stream" if stream else "not a JSON chat completion"
    url = f"{srv.base_url}/chat/completions"
    assert_bad_response(error, url, 200, "text/html", expected, "<!DOCTYPE html>", "<title>Sign in</title>")
    assert "</html>" not in error.message and len(error.message) < 400, "only the page's start is quoted"
    assert (srv.stats.requests, srv.stats.faults) == (1, 1)


async def test_a_json_answer_to_a_stream_is_a_bad_response_sent_once(srv: FakeLLMServer) -> None:
    async with link(srv.base_url) as llm:
        error = await call(llm, "hi [[arkq:flip_stream=1]]", stream=True)
    url = f"{srv.base_url}/chat/completions"
    assert_bad_response(error, url, 200, "application/json", "not a text/event-stream", '"chat.completion"')
    assert srv.stats.requests == 1


async def test_a_stream_answering_a_non_streamed_call_is_a_bad_response_sent_once(
    srv: FakeLLMServer,
) -> None:
    async with link(srv.base_url) as llm:
        error = await call(llm, "hi [[arkq:flip_stream=1]]", stream=False)
    url = f"{srv.base_url}/chat/completions"
    assert_bad_response(error, url, 200, "text/event-stream", "not a JSON chat completion", "data: {")
    assert srv.stats.requests == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_a_404_on_the_completions_path_is_a_bad_response_sent_once(
    srv: FakeLLMServer, stream: bool
) -> None:
    async with link(srv.base_url) as llm:
        error = await call(llm, "hi [[arkq:status=404]]", stream=stream)
    url = f"{srv.base_url}/chat/completions"
    assert_bad_response(error, url, 404, "application/json", "Injected fault")
    assert srv.stats.requests == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_a_base_url_without_v1_is_a_bad_response_sent_once(srv: FakeLLMServer, stream: bool) -> None:
    """The commonest slip: `http://host:30000` for `http://host:30000/v1`. SGLang answers FastAPI's 404."""
    async with link(srv.url) as llm:
        error = await call(llm, "hi", stream=stream)
    assert_bad_response(error, f"{srv.url}/chat/completions", 404, '{"detail":"Not Found"}', "/v1")
    assert (srv.stats.not_found, srv.stats.requests) == (1, 0)


async def test_the_same_request_succeeds_once_the_server_answers_right(srv: FakeLLMServer) -> None:
    """`times` limits the new faults too, so the link is left usable: nothing about it was broken."""
    async with link(srv.base_url) as llm:
        prompt = "hi [[arkq:html=1 times=1 tokens=4]]"
        assert (await call(llm, prompt, stream=True)).kind == "bad_response"
        assert len((await llm.generate_response([UserMessage(content=prompt)])).split()) == 4
    assert (srv.stats.requests, srv.stats.completed) == (2, 1)
