"""ArkModelLink over real HTTP against tiny scripted servers, for wire cases an emulator cannot express:
exact chunk framing, a stream that ends cleanly without [DONE], silence between chunks, a server that
keeps the connection open after [DONE], connection reuse."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from model_module import ArkModelLink, Finish, ModelError, StreamEvent, TextDelta, UserMessage

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
HI = [UserMessage(content="hi")]


class Server:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.requests: list[dict[str, Any]] = []
        self.peers: list[tuple[str, int]] = []


@asynccontextmanager
async def serve(handler: Handler) -> AsyncIterator[Server]:
    server: Server | None = None

    async def recorded(request: web.Request) -> web.StreamResponse:
        assert server is not None
        server.requests.append(await request.json())
        server.peers.append(request.transport.get_extra_info("peername") if request.transport else ("", 0))
        return await handler(request)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", recorded)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server = Server(f"http://127.0.0.1:{port}/v1")
    try:
        yield server
    finally:
        await runner.cleanup()


def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": choices, **extra}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def sse_handler(
    *parts: bytes, hold_open_s: float = 0.0, pause_before: int = -1, pause_s: float = 0.0
) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for number, part in enumerate(parts):
            if number == pause_before:
                await asyncio.sleep(pause_s)  # fixed: the server's stall is what the test is about
            await response.write(part)
        if hold_open_s:
            await asyncio.sleep(hold_open_s)  # fixed: a server that keeps the stream open, on purpose
        await response.write_eof()
        return response

    return handler


def link(server: Server, **kwargs: Any) -> ArkModelLink:
    settings: dict[str, Any] = {"max_retries": 2, "backoff_base_s": 0.01, "backoff_max_s": 0.02}
    settings.update(kwargs)
    return ArkModelLink(model_name="m", base_url=server.base_url, **settings)


async def collect(llm: ArkModelLink, **kwargs: Any) -> list[StreamEvent]:
    return [event async for event in llm.stream(HI, **kwargs)]


async def test_sglang_shaped_stream() -> None:
    parts = (
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}) + chunk({"content": "lo, "}),  # two events in one TCP write
        chunk({"content": "world"}),
        chunk({}, finish_reason="stop", matched_stop=2),
        chunk(None, usage=USAGE),
        DONE,
    )
    async with serve(sse_handler(*parts)) as server, link(server) as llm:
        events = await collect(llm, rid="job-42", max_tokens=7, temperature=0.1, model="other")
    assert events == [TextDelta("Hel"), TextDelta("lo, "), TextDelta("world"), Finish("stop", USAGE)]
    sent = server.requests[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert (sent["rid"], sent["max_tokens"], sent["temperature"], sent["model"]) == (
        "job-42",
        7,
        0.1,
        "other",
    )


async def test_crlf_framing_and_split_writes() -> None:
    body = chunk({"content": "a"}) + chunk({"content": "é"}) + chunk({}, "length") + DONE
    body = body.replace(b"\n", b"\r\n")
    pieces = tuple(body[i : i + 7] for i in range(0, len(body), 7))  # lines and UTF-8 split across reads
    async with serve(sse_handler(*pieces)) as server, link(server) as llm:
        events = await collect(llm)
    assert events == [TextDelta("a"), TextDelta("é"), Finish("length", None)]


@pytest.mark.parametrize("size", [1, 2, 3, 5])
async def test_raw_utf8_split_at_any_byte_arrives_whole(size: int) -> None:
    """The link splits the body into lines itself: a character cut between two reads is whole once
    its line is, whatever the cut."""
    texts = ["日本語", " 🎉 ", "naïve"]
    body = b"".join(
        b"data: "
        + json.dumps({"choices": [{"index": 0, "delta": {"content": t}}]}, ensure_ascii=False).encode()
        + b"\n\n"
        for t in texts
    )
    body += chunk({}, "stop") + DONE
    pieces = tuple(body[i : i + size] for i in range(0, len(body), size))
    async with serve(sse_handler(*pieces)) as server, link(server) as llm:
        events = await collect(llm)
    assert events == [*(TextDelta(t) for t in texts), Finish("stop", None)]


async def test_clean_end_without_done_after_delta_is_a_stream_error_without_retry() -> None:
    async with serve(sse_handler(chunk({"content": "partial"}))) as server, link(server) as llm:
        seen: list[StreamEvent] = []
        with pytest.raises(ModelError) as caught:
            async for event in llm.stream(HI):
                seen.append(event)
    assert seen == [TextDelta("partial")]
    assert (caught.value.kind, caught.value.retryable) == ("stream", True)
    assert len(server.requests) == 1


async def test_empty_stream_is_retried_then_fails() -> None:
    async with serve(sse_handler(chunk({"role": "assistant", "content": ""}))) as server, link(server) as llm:
        with pytest.raises(ModelError) as caught:
            await collect(llm)
    assert caught.value.kind == "stream"
    assert len(server.requests) == 3  # first try + max_retries


async def test_in_stream_error_before_first_delta_is_retried() -> None:
    calls = 0
    queue_full = {"error": {"object": "error", "message": "The request queue is full.", "code": 503}}

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            return await sse_handler(b"data: " + json.dumps(queue_full).encode() + b"\n\n", DONE)(request)
        return await sse_handler(chunk({"content": "ok"}), chunk({}, "stop"), DONE)(request)

    async with serve(handler) as server, link(server) as llm:
        events = await collect(llm)
    assert events == [TextDelta("ok"), Finish("stop", None)]
    assert len(server.requests) == 2


async def test_status_errors_are_typed_and_retried_by_the_link_only() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = {"object": "error", "message": "engine crashed", "type": "InternalServerError", "code": 500}
        return web.json_response(body, status=500)

    async with serve(handler) as server, link(server, max_retries=2) as llm:
        with pytest.raises(ModelError) as caught:
            await collect(llm)
        assert (caught.value.kind, caught.value.status_code) == ("server_error", 500)
        assert caught.value.message == "engine crashed"
        assert len(server.requests) == 3  # the SDK's own retries are off: exactly 1 + max_retries
        with pytest.raises(ModelError):
            await llm.generate_response(HI)
        assert len(server.requests) == 6


async def test_auth_error_is_not_retried() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"message": "bad key", "code": 401}, status=401)

    async with serve(handler) as server, link(server) as llm:
        with pytest.raises(ModelError) as caught:
            await collect(llm)
    assert (caught.value.kind, caught.value.retryable, caught.value.status_code) == ("auth", False, 401)
    assert caught.value.message == "bad key"
    assert len(server.requests) == 1


async def test_silence_after_first_delta_is_a_timeout_without_retry() -> None:
    handler = sse_handler(chunk({"content": "a"}), chunk({"content": "b"}), DONE, pause_before=1, pause_s=2)
    async with serve(handler) as server, link(server, read_timeout_s=0.3) as llm:
        seen: list[StreamEvent] = []
        with pytest.raises(ModelError) as caught:
            async for event in llm.stream(HI):
                seen.append(event)
    assert seen == [TextDelta("a")]
    assert (caught.value.kind, caught.value.retryable) == ("timeout", True)
    assert len(server.requests) == 1


async def test_finish_does_not_wait_for_a_server_that_holds_the_stream_open() -> None:
    handler = sse_handler(chunk({"content": "a"}), chunk({}, "stop"), DONE, hold_open_s=5)
    async with serve(handler) as server, link(server, read_timeout_s=10) as llm:
        started = time.perf_counter()
        events = await collect(llm)
        elapsed = time.perf_counter() - started
    assert events[-1] == Finish("stop", None)
    assert elapsed < 2


async def test_connection_is_reused_across_streams() -> None:
    async with serve(sse_handler(chunk({"content": "a"}), DONE)) as server, link(server) as llm:
        for _ in range(3):
            assert await collect(llm) == [TextDelta("a"), Finish(None, None)]
        assert await llm.generate_stream(HI).__anext__() == "a"
    assert len(set(server.peers[:3])) == 1


async def test_closing_the_stream_early_closes_the_request() -> None:
    disconnected = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            while True:
                await response.write(chunk({"content": "x"}))
                await asyncio.sleep(0.01)  # fixed: the endless server's pace between tokens
        except (ConnectionResetError, asyncio.CancelledError):
            disconnected.set()
            raise

    async with serve(endless) as server, link(server) as llm:
        texts = llm.generate_stream(HI)
        assert await texts.__anext__() == "x"
        await texts.aclose()
        await asyncio.wait_for(disconnected.wait(), 2)


async def test_a_stream_sent_as_text_plain_is_a_bad_response_without_retry() -> None:
    """Content that looks like SSE does not make up for the wrong content type: a server that sends it so
    is not the OpenAI-compatible server the link expects, and retrying it gets the same answer."""

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=chunk({"content": "a"}) + DONE, content_type="text/plain")

    async with serve(handler) as server, link(server) as llm:
        with pytest.raises(ModelError) as caught:
            await collect(llm)
    error = caught.value
    assert (error.kind, error.retryable, error.status_code) == ("bad_response", False, 200)
    assert "text/plain" in caught.value.message and "data: {" in caught.value.message
    assert len(server.requests) == 1


async def test_an_endless_wrong_body_is_reported_from_its_first_bytes() -> None:
    """Only the start of a wrong body is read: a server sending HTML forever still fails the call at once."""

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):
            await response.write(b"<html><body>Please log in")
            while True:
                await response.write(b" " * 64)
                await asyncio.sleep(0.01)  # fixed: the endless server's pace
        return response

    async with serve(endless) as server, link(server, read_timeout_s=5) as llm:
        with pytest.raises(ModelError) as caught:
            await asyncio.wait_for(collect(llm), 3)
    assert caught.value.kind == "bad_response"
    assert "Please log in" in caught.value.message and caught.value.message.count("...") == 1


async def test_lines_that_are_not_sse_are_counted_and_warned_about_once_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A proxy that mangles a stream must leave a trace: one warning per request, with the count and
    the first such line, cut short. SSE's own fields and comments are not counted."""
    junk = "<!-- injected by a proxy -->" + "x" * 300
    parts = (
        b": keep-alive comment\n\nevent: message\nid: 7\nretry: 100\n",
        chunk({"content": "a"}),
        junk.encode() + b"\nstray line\n\n",
        chunk({}, finish_reason="stop"),
        DONE,
    )
    caplog.set_level(logging.WARNING, logger="model_module.link")
    async with serve(sse_handler(*parts)) as server, link(server) as llm:
        for _ in range(2):
            assert await collect(llm) == [TextDelta("a"), Finish("stop", None)]
    warnings = [record.getMessage() for record in caplog.records if "not SSE" in record.getMessage()]
    assert len(warnings) == 2  # one per request
    assert " 2 line(s)" in warnings[0]
    assert repr(junk[:120]) in warnings[0] and "stray line" not in warnings[0]


async def test_a_clean_stream_warns_about_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="model_module.link")
    clean = sse_handler(b": ping\n\n", chunk({"content": "a"}), DONE)
    async with serve(clean) as server, link(server) as llm:
        await collect(llm)
    assert not caplog.records
