"""Streamed chat completions read by an asyncio Protocol: the hot path of every job.

At a GPU's pace each token reaches the worker on its own, one decode step apart, so what one chunk
costs is what a worker core can relay. Read through the SDK's client (aiohttp, under httpx, under the
SDK, then async generators), a chunk costs about 52 µs of CPU; parsed in the Protocol's
`data_received` with httptools (llhttp, the parser uvicorn uses) and handed to a callback there, about
22 µs (`bench/RESULTS.md`). So the streamed call alone goes this way; every other call (non-streamed
completions, the model list, aborts) stays on the SDK.

It is HTTP/1.1 only as far as a chat completion stream needs: one POST with a JSON body on a kept-alive
connection (plain or TLS), the response's status and headers, a chunked, sized or close-delimited body.
Every failure becomes the `ModelError` the SDK's would have become (`model_module.errors`).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import httptools

from model_module.errors import BODY_PREVIEW_BYTES, ConnectFailed, ModelError, bad_response, status_error
from model_module.events import StreamEvent
from model_module.sse import ChunkDecoder

#: Told each event of the stream as it is parsed: a plain function, which does its work before it
#: returns. It may return an awaitable: reading stops until it is done (a consumer that cannot keep up
#: pushes back on the server, as TCP would). The events of what has arrived already are still told,
#: and the awaitable returned last is the one waited for (an earlier one is dropped, and closed if it
#: is a coroutine): the push-back bounds what is buffered, to about one read more.
EventSink = Callable[[StreamEvent], Awaitable[None] | None]

#: An error response's body is read up to this size: enough for any server's error JSON.
ERROR_BODY_LIMIT = 64 * 1024
#: Idle connections a pool keeps for reuse; more are closed when their response ends.
MAX_IDLE = 256
#: An idle connection older than this is not reused: a NAT or a load balancer may have dropped it
#: without a word, and a request on it would wait out the read timeout (httpx's keep-alive expiry).
KEEPALIVE_S = 5.0
#: After `[DONE]` the answer is complete, and the request returns; the connection goes back to the pool
#: and is reused once the rest of the body (normally just the end of its chunked encoding) has come, or
#: closed if it has not come within this time.
DRAIN_S = 1.0


@dataclass(frozen=True)
class Endpoint:
    """Where a link's requests go, from its `base_url`."""

    host: str
    port: int
    tls: bool
    #: The path before `/chat/completions` (`/v1`), without a trailing slash.
    prefix: str
    #: The `Host` header: the host, with the port unless it is the scheme's default.
    authority: str

    @classmethod
    def of(cls, base_url: str) -> Endpoint:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        tls = parts.scheme == "https"
        default = 443 if tls else 80
        port = parts.port or default
        shown = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            prefix=parts.path.rstrip("/"),
            authority=shown if port == default else f"{shown}:{port}",
        )

    def url(self, path: str) -> str:
        return f"{'https' if self.tls else 'http'}://{self.authority}{self.prefix}{path}"

    def proxy(self) -> str | None:
        """The proxy the environment names for this endpoint (`HTTPS_PROXY`, `HTTP_PROXY`, less
        `NO_PROXY`), which streamed calls do not use: None when there is none."""
        proxy = getproxies().get("https" if self.tls else "http")
        return None if proxy is None or proxy_bypass(self.host) else proxy


class _Connection(asyncio.Protocol):
    """One connection and the response being read on it.

    The Protocol does the reading: httptools parses what arrives, the SSE decoder turns the body into
    events and the sink is told each one before `data_received` returns, so a token costs no task
    switch. The request's coroutine wakes only when the response ends, fails, or its sink pushes back.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: No request is using the connection.
        self.idle = True
        #: The whole HTTP response has been read (`keep_alive`: the server keeps the connection open).
        self.complete = True
        self.keep_alive = False
        #: When its last request let go of it (the pool's clock).
        self.released_at = 0.0
        self.decoder = ChunkDecoder()
        self.status = 0
        self.headers: dict[str, str] = {}
        #: A 200 with an SSE body: its events go to the sink. Any other body is kept (up to a limit).
        self.streaming = False
        self.error_body = b""
        self.got_bytes = False
        self.failure: BaseException | None = None
        #: What the sink asked reading to wait for.
        self.blocked: Awaitable[None] | None = None
        #: The request has what it waits for: the whole response, `[DONE]`, or a failure.
        self.ended = False
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.wake: asyncio.Future[None] | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self._sink: EventSink | None = None
        self._rest = b""

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are no subclasses of asyncio's, so no isinstance check: it is a stream's.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.last_data = asyncio.get_running_loop().time()
        if self._parser is None or self.complete:
            self.close()  # bytes nobody asked for: the connection cannot be trusted with a request
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            if self.ended and self.decoder.done:
                self.close()  # garbage after a whole answer: the connection goes, the answer stands
            elif self.failure is None:  # not a callback's own failure, which it has recorded already
                self._fail(ModelError("stream", f"the LLM server's response is not valid HTTP/1.1: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.ended:
            return
        if self.status and (exc is None or self.decoder.done):
            self._end()  # a body that runs to the connection's end, or one cut short (the decoder tells)
        elif exc is None:
            self._fail(ModelError("stream", "the LLM server closed the connection"))
        else:
            failure = ModelError("stream", f"the response stream broke: {type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            self._fail(failure)

    # -- httptools callbacks ------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        self.status = self._parser.get_status_code()
        media = self.headers.get("content-type", "").partition(";")[0].strip().lower()
        self.streaming = self.status == 200 and media == "text/event-stream"

    def on_body(self, body: bytes) -> None:
        if not self.streaming:
            self.error_body += body
            # Enough to say what it is (a page that is no API needs only its start); the rest is not read.
            limit = BODY_PREVIEW_BYTES if self.status == 200 else ERROR_BODY_LIMIT
            if len(self.error_body) > limit:
                self._end()
                self.close()
            return
        if self.failure is not None:
            return
        lines = (self._rest + body).split(b"\n") if self._rest else body.split(b"\n")
        self._rest = lines.pop()
        try:
            for line in lines:
                self._line(line)
        except BaseException as error:  # the sink's (a lost lease) or the decoder's (an error event)
            self._fail(error)  # here, not through httptools, which would wrap it in a parser error
            return
        if self.decoder.done and not self.ended:
            self._end()  # the answer is whole; the rest of the body is read after the request returns

    def on_message_complete(self) -> None:
        assert self._parser is not None
        self.complete, self.keep_alive = True, self._parser.should_keep_alive()
        self._end()

    # -- the request's side -------------------------------------------------------------------------

    def start(
        self, request: bytes, decoder: ChunkDecoder, sink: EventSink, wake: asyncio.Future[None]
    ) -> None:
        """Send `request` and read its response through `decoder` into `sink`."""
        assert self.transport is not None
        self.idle, self.ended, self.complete, self.keep_alive = False, False, False, False
        self._parser = httptools.HttpResponseParser(self)
        self.decoder, self._sink, self.wake, self._rest = decoder, sink, wake, b""
        self.status, self.headers, self.streaming, self.error_body = 0, {}, False, b""
        self.got_bytes, self.failure, self.blocked = False, None, None
        self.last_data = asyncio.get_running_loop().time()
        self.transport.write(request)

    @property
    def reusable(self) -> bool:
        """It can carry another request, now or once the rest of its response has come."""
        return not self.closed and self.failure is None and (self.keep_alive or not self.complete)

    def resume(self) -> None:
        self.blocked = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def finish(self) -> None:
        """The request is over: nothing more goes to its sink."""
        self.idle, self._sink, self.wake = True, None, None
        self.released_at = asyncio.get_running_loop().time()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.blocked is not None:
            _discard(self.blocked)
            self.blocked = None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _line(self, line: bytes) -> None:
        sink = self._sink
        for event in self.decoder.feed(line.rstrip(b"\r").decode("utf-8", "replace")):
            if sink is not None:
                waiting = sink(event)
                if waiting is not None:
                    self._block(waiting)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self.streaming:
            try:
                if self._rest:
                    rest, self._rest = self._rest, b""
                    self._line(rest)
                self._line(b"")  # an event the server did not end with a blank line
            except BaseException as error:
                self._fail(error)
                return
        self._signal()

    def _block(self, waiting: Awaitable[None]) -> None:
        if self.blocked is not None:  # already paused: the newer wait covers the older one
            _discard(self.blocked)
        self.blocked = waiting
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._signal()

    def _fail(self, error: BaseException) -> None:
        if self.failure is None:
            self.failure = error
        self.ended = True
        self.close()
        self._signal()

    def _signal(self) -> None:
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)


def _discard(waiting: Awaitable[None]) -> None:
    close = getattr(waiting, "close", None)  # a coroutine never awaited must not warn
    if close is not None:
        close()


def _close_if_draining(connection: _Connection) -> None:
    if connection.idle and not connection.complete:
        connection.close()


def _check_silence(connection: _Connection, timeout: float) -> None:
    """The read timeout, one timer a response: it fires, and looks again after the time left, until the
    connection has been silent for `timeout` seconds (a timer per chunk would cost more than the chunk).
    A sink that pushes back is not the server's silence."""
    if connection.ended or connection.idle:
        return
    loop = asyncio.get_running_loop()
    left = timeout if connection.blocked is not None else connection.last_data + timeout - loop.time()
    if left > 0:
        connection.timer = loop.call_later(left, _check_silence, connection, timeout)
    else:
        connection._fail(ModelError("timeout", f"no data from the LLM server in {timeout:g} s"))


class StreamPool:
    """The kept-alive connections of one link on one event loop."""

    def __init__(self, endpoint: Endpoint, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self.endpoint = endpoint
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.is_closed = False
        self._idle: list[_Connection] = []
        self._ssl = ssl.create_default_context() if endpoint.tls else None

    async def post_stream(
        self, path: str, body: bytes, headers: dict[str, str], decoder: ChunkDecoder, sink: EventSink
    ) -> None:
        """POST `body` to `path` and tell `sink` every event of the SSE answer, as it arrives.

        `decoder` reads the answer: afterwards it says whether the stream ended with `[DONE]`, and holds
        its finish reason and usage. Raises `ModelError` for a failure of the request; what the sink
        raises, as it raised it."""
        head = [f"POST {self.endpoint.prefix}{path} HTTP/1.1", f"Host: {self.endpoint.authority}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        head.append(f"Content-Length: {len(body)}")
        request = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        while True:
            connection, reused = await self._acquire()
            try:
                await self._exchange(connection, request, decoder, sink)
            except ModelError as error:
                connection.close()
                if reused and error.kind == "connect" and not connection.got_bytes:
                    continue  # a kept-alive connection the server had closed: once more, on a new one
                raise
            except BaseException:
                connection.close()  # cancelled, or the sink's failure: the server stops generating
                raise
            finally:
                connection.finish()
            if connection.streaming:
                self._release(connection)
                return
            connection.close()
            raise self._refusal(connection, path)

    async def _exchange(
        self, connection: _Connection, request: bytes, decoder: ChunkDecoder, sink: EventSink
    ) -> None:
        """Send the request on `connection` and wait until its response has ended."""
        loop = asyncio.get_running_loop()
        connection.start(request, decoder, sink, loop.create_future())
        timeout = self.read_timeout_s
        connection.timer = loop.call_later(timeout, _check_silence, connection, timeout)
        while True:
            # The state first, then the wait: the response may have ended, or failed, while this waited
            # for a sink's push-back, and its signal went to the wait before.
            failure = connection.failure
            if failure is not None:
                if isinstance(failure, ModelError) and failure.kind == "stream" and not connection.got_bytes:
                    # Not a byte came back: the request may never have reached the server.
                    raise ModelError(
                        "connect", f"the connection to the LLM server failed: {failure.message}"
                    ) from failure.__cause__
                raise failure
            waiting = connection.blocked
            if waiting is not None:
                await waiting
                if connection.blocked is waiting:
                    connection.resume()
                connection.last_data = loop.time()
                continue
            if connection.ended:
                return
            assert connection.wake is not None
            await connection.wake
            connection.wake = loop.create_future()

    def _refusal(self, connection: _Connection, path: str) -> ModelError:
        url = self.endpoint.url(path)
        status, headers, body = connection.status, connection.headers, connection.error_body
        if status == 200:
            return bad_response(url, status, headers.get("content-type"), body, "a text/event-stream stream")
        if 300 <= status < 400:  # not followed: a POST's body and method do not survive every redirect
            where = headers.get("location", "nowhere it names")
            return ModelError(
                "bad_response",
                f"{url} redirects (HTTP {status}) to {where}: set llm.base_url to where the API is",
                status_code=status,
            )
        return status_error(status, headers, body, url)

    async def _acquire(self) -> tuple[_Connection, bool]:
        found = self._reuse()
        if found is not None:
            return found, True
        endpoint, loop = self.endpoint, asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s) as scope:
                _, connection = await loop.create_connection(
                    _Connection, endpoint.host, endpoint.port, ssl=self._ssl
                )
        except TimeoutError as error:
            if not scope.expired():  # the system's own connect timeout (ETIMEDOUT): no route there
                failed = ConnectFailed(endpoint.host, endpoint.port, error)
                raise ModelError("connect", str(failed)) from failed
            raise ModelError(
                "timeout",
                f"request timed out: no connection to {endpoint.host}:{endpoint.port} "
                f"in {self.connect_timeout_s:g} s",
            ) from None
        except OSError as error:
            failed = ConnectFailed(endpoint.host, endpoint.port, error)
            raise ModelError("connect", str(failed)) from failed
        return connection, False

    def _reuse(self) -> _Connection | None:
        """The idle connection used last, whose response has been read whole; the ones closed meanwhile,
        or draining for too long, are closed and dropped."""
        now = asyncio.get_running_loop().time()
        for index in range(len(self._idle) - 1, -1, -1):
            connection = self._idle[index]
            idle_s = now - connection.released_at
            if connection.complete and connection.reusable and idle_s <= KEEPALIVE_S:
                del self._idle[index]
                return connection
            if not connection.reusable or idle_s > (KEEPALIVE_S if connection.complete else DRAIN_S):
                del self._idle[index]
                connection.close()
        return None

    def _release(self, connection: _Connection) -> None:
        if self.is_closed or not connection.reusable or len(self._idle) >= MAX_IDLE:
            connection.close()
            return
        self._idle.append(connection)
        if not connection.complete:  # still draining: closed if the rest of its body does not come
            asyncio.get_running_loop().call_later(DRAIN_S, _close_if_draining, connection)

    def close(self) -> None:
        """Close the idle connections; those in use close when their response ends."""
        self.is_closed = True
        for connection in self._idle:
            connection.close()
        self._idle.clear()
