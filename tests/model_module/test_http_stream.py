"""`ArkModelLink.relay` and the Protocol under it (`model_module.http_stream`): deltas told to a sink as
they are read, a sink that pushes back, a sink that fails, kept-alive connections, uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager

import pytest
import uvloop
from aiohttp import web

from model_module import ArkModelLink, Finish, ModelError, StreamEvent, TextDelta, http_stream
from model_module.http_stream import Endpoint
from tests.model_module.test_model_link_wire import DONE, HI, USAGE, Handler, chunk, serve, sse_handler

WORDS = ["a", "b", "c", "d"]


def words_handler() -> Handler:
    parts = [chunk({"content": word}) for word in WORDS]
    return sse_handler(*parts, chunk({}, "stop"), chunk(None, usage=USAGE), DONE)


def trickle_handler() -> Handler:
    """The words one at a time, as a GPU sends them (what arrives together is told together)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in WORDS:
            await response.write(chunk({"content": word}))
            await asyncio.sleep(0.02)  # fixed: a decode step
        await response.write(chunk({}, "stop") + DONE)
        await response.write_eof()
        return response

    return handler


def link(base_url: str, **options: float) -> ArkModelLink:
    return ArkModelLink(base_url=base_url, max_retries=0, backoff_base_s=0.01, **options)  # type: ignore[arg-type]


async def test_relay_tells_the_sink_each_delta_and_returns_the_finish() -> None:
    told: list[StreamEvent] = []
    async with serve(words_handler()) as server, link(server.base_url) as llm:
        finish = await llm.relay(HI, sink=told.append)
    assert [event.text for event in told if isinstance(event, TextDelta)] == WORDS
    assert finish == Finish("stop", USAGE)


async def test_a_sink_that_pushes_back_stops_the_reading_until_it_is_done() -> None:
    told: list[str] = []
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    held = asyncio.Event()

    def sink(event: StreamEvent) -> Awaitable[None] | None:
        assert isinstance(event, TextDelta)
        told.append(event.text)
        if event.text == "b":
            held.set()
            return gate
        return None

    async with serve(trickle_handler()) as server, link(server.base_url) as llm:
        call = asyncio.create_task(llm.relay(HI, sink=sink))
        await held.wait()
        await asyncio.sleep(0.2)  # fixed: the server has sent it all; nothing more may reach the sink
        assert told == ["a", "b"] and not call.done()
        gate.set_result(None)
        finish = await call
    assert told == WORDS and finish.reason == "stop"


async def test_a_push_back_on_the_last_delta_still_ends_the_call() -> None:
    """The answer's end arrives with the delta the sink pushes back on: the call must see it when the
    push-back is over, although the end was signalled while the call waited for the sink."""
    whole = b"".join([*(chunk({"content": word}) for word in WORDS), chunk({}, "stop"), DONE])

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(whole)  # one write: the last delta, the finish and [DONE] arrive together
        await response.write_eof()
        return response

    def sink(event: StreamEvent) -> Awaitable[None] | None:
        if isinstance(event, TextDelta) and event.text == WORDS[-1]:
            return asyncio.sleep(0.05)  # fixed: a consumer that takes a moment
        return None

    async with serve(handler) as server, link(server.base_url) as llm:
        finish = await asyncio.wait_for(llm.relay(HI, sink=sink), timeout=10)
    assert finish.reason == "stop"


class Refused(Exception):
    pass


async def test_what_the_sink_raises_ends_the_call_as_raised_and_closes_the_connection() -> None:
    def sink(event: StreamEvent) -> None:
        raise Refused("not mine any more")

    async with serve(words_handler()) as server, link(server.base_url) as llm:
        with pytest.raises(Refused):
            await llm.relay(HI, sink=sink)
        await llm.relay(HI, sink=lambda event: None)
    assert server.peers[0] != server.peers[1]  # the failed call's connection was not reused


async def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = await words_handler()(request)
        assert request.transport is not None
        asyncio.get_running_loop().call_later(0.05, request.transport.close)
        return response

    async with serve(handler) as server, link(server.base_url) as llm:
        for _ in range(2):
            await llm.relay(HI, sink=lambda event: None)
            await asyncio.sleep(0.3)  # fixed: the server closes the kept-alive connection meanwhile
    assert len(server.requests) == 2 and server.peers[0] != server.peers[1]


def test_relay_runs_on_uvloop() -> None:
    async def main() -> list[str]:
        told: list[str] = []
        async with serve(words_handler()) as server, link(server.base_url) as llm:
            await llm.relay(HI, sink=lambda event: told.append(getattr(event, "text", "")))
            async for event in llm.stream(HI):
                if isinstance(event, TextDelta):
                    told.append(event.text)
        return told

    assert uvloop.run(main()) == WORDS + WORDS


@pytest.mark.parametrize(
    ("base_url", "host", "port", "prefix", "authority"),
    [
        ("http://127.0.0.1:30000/v1", "127.0.0.1", 30000, "/v1", "127.0.0.1:30000"),
        ("https://llm.example.com/v1/", "llm.example.com", 443, "/v1", "llm.example.com"),
        ("http://[::1]:8000", "::1", 8000, "", "[::1]:8000"),
    ],
)
def test_endpoint_of_a_base_url(base_url: str, host: str, port: int, prefix: str, authority: str) -> None:
    endpoint = Endpoint.of(base_url)
    assert (endpoint.host, endpoint.port, endpoint.prefix, endpoint.authority) == (
        host,
        port,
        prefix,
        authority,
    )
    assert (
        endpoint.url("/chat/completions")
        == f"{base_url.split('://')[0]}://{authority}{prefix}/chat/completions"
    )


def test_a_base_url_that_is_no_http_url_is_refused_when_the_link_is_made() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        ArkModelLink(base_url="localhost:30000/v1")


# -- edge cases: raw servers that say exactly what a test needs ----------------------------------------

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts)


async def read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    await reader.readexactly(length)


@asynccontextmanager
async def raw_server(handle: RawHandler) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server running `handle` per connection: its base URL, and a list with one entry a connection."""
    connections: list[int] = []

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await handle(reader, writer)
        writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", connections
    finally:
        server.close()


async def test_a_redirect_is_a_bad_response_naming_where_it_points_sent_once() -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect("/v2/chat/completions")

    async with serve(handler) as server, ArkModelLink(base_url=server.base_url, max_retries=2) as llm:
        with pytest.raises(ModelError) as caught:
            await llm.relay(HI, sink=lambda event: None)
    assert (caught.value.kind, caught.value.status_code) == ("bad_response", 308)
    assert "/v2/chat/completions" in caught.value.message and len(server.requests) == 1


async def test_bytes_after_a_whole_answer_do_not_undo_it() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        body = chunk({"content": "a"}) + chunk({}, "stop") + DONE
        head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)
        writer.write(head + body + b"junk past the body")  # a sloppy proxy
        await writer.drain()
        await asyncio.sleep(1)  # fixed: holds the connection open

    async with raw_server(handle) as (base_url, _), link(base_url) as llm:
        finish = await asyncio.wait_for(llm.relay(HI, sink=lambda event: None), 5)
    assert finish.reason == "stop"


async def test_an_idle_connection_older_than_the_keep_alive_expiry_is_not_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_stream, "KEEPALIVE_S", 0.1)
    async with serve(words_handler()) as server, link(server.base_url) as llm:
        await llm.relay(HI, sink=lambda event: None)
        await asyncio.sleep(0.3)  # fixed: past the (shortened) expiry
        await llm.relay(HI, sink=lambda event: None)
    assert server.peers[0] != server.peers[1]


async def test_a_connection_whose_body_does_not_end_after_done_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(http_stream, "DRAIN_S", 0.1)
    closed = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunked(chunk({"content": "a"}), chunk({}, "stop"), DONE))  # no last chunk
        await writer.drain()
        await reader.read()  # until the client closes
        closed.set()

    async with raw_server(handle) as (base_url, _), link(base_url) as llm:
        await llm.relay(HI, sink=lambda event: None)
        await asyncio.wait_for(closed.wait(), 5)


async def test_a_coroutine_function_as_sink_is_refused_with_what_to_do() -> None:
    async def sink(event: StreamEvent) -> None:
        pass

    with pytest.raises(TypeError, match="plain function"):
        await ArkModelLink(base_url="http://127.0.0.1:9/v1").relay(HI, sink=sink)  # type: ignore[arg-type]


async def test_closing_a_stream_keeps_a_cancellation_of_its_caller() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunked(chunk({"content": "a"})))
        await writer.drain()
        await asyncio.sleep(5)  # fixed: a stream that goes on

    async with raw_server(handle) as (base_url, _), link(base_url) as llm:

        async def caller() -> str:
            events = llm.stream(HI)
            await events.__anext__()
            current = asyncio.current_task()
            assert current is not None
            asyncio.get_running_loop().call_soon(current.cancel)  # arrives while the stream closes
            await events.aclose()
            await asyncio.sleep(0)
            return "ran on after its cancellation"

        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.create_task(caller()), 5)


async def test_a_failure_after_the_caller_stopped_reading_is_not_logged_as_unretrieved() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunked(chunk({"content": "a"})))
        await writer.drain()
        await asyncio.sleep(0.05)  # fixed: then the stream breaks
        writer.transport.abort()

    logged: list[str] = []
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: logged.append(context["message"]))
    async with raw_server(handle) as (base_url, _), link(base_url) as llm, aclosing(llm.stream(HI)) as events:
        async for _ in events:
            await asyncio.sleep(0.3)  # fixed: a slow caller; the call fails meanwhile
            break
    gc.collect()
    await asyncio.sleep(0.05)
    assert not logged
