"""Delivering a planned completion over HTTP, streamed or not, with pacing and faults.

Pacing is per request (each request sleeps ``ttft`` then ``itl`` a token on its own timer) or batched
(the request joins the server's :class:`~fake_llm.batching.DecodeClock`, which hands every running
request its next token at each decode step; see :mod:`fake_llm.batching`). Everything after the tokens
(finish, usage, ``[DONE]``, faults, disconnects) is the same in both.

The stream follows SGLang's ``_generate_chat_stream``: the role chunk goes out together
with the first output, each token is its own chunk, ``finish_reason`` arrives in a chunk
of its own, then the usage chunk (only with ``stream_options.include_usage``) and
``[DONE]``. An abort from ``/abort_request`` is a graceful end (``finish_reason: abort``);
an abort carrying an HTTP status (queue full, internal error) becomes an in-stream
``{"error": ...}`` event, still followed by the usage chunk and ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from aiohttp import hdrs, web

from .batching import DecodeClock, Slot
from .directives import Directives
from .generation import OutputPlan
from .metrics import SGLangMetrics
from .protocol import ChatRequest, EmulatedApiError
from .registry import ActiveRequest
from .stats import Stats
from .wire import DONE, ChunkEncoder, completion_body, dumps, escape, stream_error_event, usage_dict

__all__ = ["Turn", "complete", "fault_error", "fault_message", "login_page", "reject_stream", "stream"]

QUEUE_FULL_MESSAGE = "The request queue is full."
INJECTED_MESSAGE = "Injected fault"
UNAUTHORIZED = "Unauthorized"
_SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8"}
_NEVER = 1 << 62


def fault_message(code: int) -> str:
    return QUEUE_FULL_MESSAGE if code == 503 else INJECTED_MESSAGE


def fault_error(code: int, retry_after: int | None = None) -> EmulatedApiError:
    """The HTTP error SGLang returns for a non-streamed request that fails with ``code``.

    A 400 surfaces as a ``ValueError`` ("BadRequestError"); 500/503 aborts come through
    ``HTTPException`` whose ``type`` is the status code as a string.
    """
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    if code == 401:  # what SGLang's API-key middleware answers
        return EmulatedApiError(UNAUTHORIZED, status=401, headers=headers, body={"error": UNAUTHORIZED})
    err_type = "BadRequestError" if code == 400 else str(code)
    return EmulatedApiError(fault_message(code), status=code, err_type=err_type, headers=headers)


#: What an authenticating gateway (an SSO proxy, a captive portal) in front of the server answers a
#: client without its cookie: a 200 with a sign-in form, whatever was asked.
LOGIN_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Sign in</title></head>
<body>
<form method="post" action="/login">
<h1>Sign in to continue</h1>
<label>User name <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body>
</html>
"""


def login_page() -> web.Response:
    """The ``html`` directive's answer: what a client sees when llm.base_url reaches a gateway's
    sign-in page instead of the server behind it."""
    return web.Response(text=LOGIN_PAGE, content_type="text/html")


@dataclass(slots=True)
class Turn:
    """One accepted chat request, ready to be delivered."""

    request: ChatRequest
    plan: OutputPlan
    faults: Directives
    rid: str
    prompt_tokens: int
    ttft: float  # seconds
    itl: float  # seconds
    active: ActiveRequest
    stats: Stats
    metrics: SGLangMetrics
    created: float  # time.monotonic() when the request arrived
    clock: DecodeClock | None = None  # batched pacing; None: the request's own timer (ttft, itl)

    def observe(self, sent: int, first_token: float | None, last_token: float | None, aborted: bool) -> None:
        """The request has ended: its SGLang metrics (once per request, see :mod:`fake_llm.metrics`)."""
        self.metrics.request_ended(
            prompt_tokens=self.prompt_tokens,
            generation_tokens=sent,
            created=self.created,
            first_token=first_token,
            last_token=last_token,
            ended=time.monotonic(),
            aborted=aborted,
        )

    @property
    def fault_after(self) -> int:
        """Tokens to deliver before the injected stream fault fires (never, if none)."""
        if self.faults.cut_after is not None:
            return self.faults.cut_after
        if self.faults.stream_error is not None:
            return self.faults.error_after
        return _NEVER

    def fault_fires(self, sent: int) -> bool:
        """Whether the injected fault fires once ``sent`` tokens are out.

        A fault asked for after more tokens than the answer has fires at its end, in
        place of the finish chunk.
        """
        return self.fault_after != _NEVER and (
            sent >= self.fault_after or sent == self.plan.completion_tokens
        )

    def reasoning_sent(self, sent: int) -> int:
        return min(sent, len(self.plan.reasoning))

    @property
    def target(self) -> int:
        """Tokens to generate before the answer ends or its injected fault fires."""
        return min(self.plan.completion_tokens, self.fault_after)


def _tool_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"  # SGLang's format for every parser but kimi_k2


#: A token's chunk; ``b""`` for a token that adds no visible text, None for a ``stamp`` token, whose
#: chunk is rendered when it is written.
_Chunk = bytes | None


@lru_cache(maxsize=1)
def _stamp_json(stamp: float) -> bytes:
    """The JSON text of a ``stamp`` token: the Unix time ``stamp``. Every chunk of a decode step carries
    the step's time, so it is rendered once for all of them."""
    return escape(f" {stamp:.6f}")


def _token_chunks(turn: Turn, encoder: ChunkEncoder) -> Iterator[_Chunk]:
    """One chunk per output token.

    With ``stamp`` each visible content token is None instead, rendered (:func:`_stamp_json`) only
    when it is written, so that the time it carries is the moment of the write: a client takes
    (receive time - stamp) as the delivery latency of the token, the server's pacing excluded.
    """
    plan = turn.plan
    stamp = turn.faults.stamp
    for token in plan.reasoning:
        yield encoder.reasoning(token) if token else b""
    for token in plan.content:
        if not token:
            yield b""
        else:
            yield None if stamp else encoder.content(token)
    if plan.tool_name is not None:
        yield encoder.tool_call_start(_tool_call_id(), plan.tool_name)
        for fragment in plan.tool_args:
            yield encoder.tool_call_args(fragment) if fragment else b""


def _cut_connection(http_request: web.Request) -> None:
    """Drop the TCP connection mid-response, like a crashed server or a dead proxy."""
    transport = http_request.transport
    if transport is not None:
        transport.abort()


@dataclass(slots=True)
class _Progress:
    sent: int = 0  # output tokens delivered
    role_sent: bool = False
    first_at: float | None = None  # time.monotonic() of the first output's write
    last_at: float | None = None  # and of the last one's
    disconnected: bool = False  # a write found the client gone (batched pacing)


async def _send_tokens(
    response: web.StreamResponse, turn: Turn, encoder: ChunkEncoder, progress: _Progress
) -> None:
    active, fault_after = turn.active, turn.fault_after
    if turn.faults.stream_error is not None and fault_after == 0:
        return  # rejected before the first output: no role chunk either
    # Tokens keep to a schedule, as a GPU's decode steps do: a late wake-up (a busy machine) shortens
    # the next wait instead of slowing the whole stream down.
    loop = asyncio.get_running_loop()
    started = loop.time()
    for planned in _token_chunks(turn, encoder):
        if progress.sent >= fault_after:
            return
        due = started + turn.ttft + turn.itl * progress.sent
        await active.sleep(max(0.0, due - loop.time()))
        if active.aborted:
            return
        chunk = encoder.content_json(_stamp_json(time.time())) if planned is None else planned
        if not progress.role_sent:
            chunk = encoder.role() + chunk
            progress.role_sent = True
        if chunk:
            await response.write(chunk)
        progress.last_at = time.monotonic()
        if progress.first_at is None:
            progress.first_at = progress.last_at
        progress.sent += 1


class _StepWriter:
    """Writes one stream's tokens as the decode clock hands them out (batched pacing).

    Called by the clock for every running request at every step, so it is kept to the least work: the
    token's chunk is already rendered (a ``stamp`` token's text is rendered once per step), and it goes
    straight to the socket in HTTP/1.1 chunked framing, without the coroutine (and its possible wait
    for the reader) of ``StreamResponse.write``: the clock does not wait for any one reader, as SGLang's
    scheduler does not; what a reader has not read stays in its socket's buffer. A client found gone
    leaves its request in the batch, unwritten, until the answer is done or the request is aborted, as
    :func:`_linger` keeps it with per-request pacing.
    """

    __slots__ = ("_chunked", "_chunks", "_encoder", "_progress", "_request", "_stats")

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        turn: Turn,
        encoder: ChunkEncoder,
        progress: _Progress,
    ) -> None:
        self._request = request
        self._chunked = response.headers.get(hdrs.TRANSFER_ENCODING) == "chunked"  # else HTTP/1.0: raw
        self._chunks = _token_chunks(turn, encoder)
        self._encoder = encoder
        self._progress = progress
        self._stats = turn.stats

    def __call__(self, stamp: float) -> None:
        progress = self._progress
        planned = next(self._chunks)
        if progress.disconnected:
            return
        transport = self._request.transport
        if transport is None or transport.is_closing():
            progress.disconnected = True
            self._stats.disconnected += 1
            return
        chunk = self._encoder.content_json(_stamp_json(stamp)) if planned is None else planned
        if not progress.role_sent:
            chunk = self._encoder.role() + chunk
            progress.role_sent = True
        if chunk:
            transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self._chunked else chunk)
        progress.last_at = time.monotonic()
        if progress.first_at is None:
            progress.first_at = progress.last_at
        progress.sent += 1


async def _in_batch(clock: DecodeClock, slot: Slot) -> None:
    """Run a request in the server's decode batch until it has its tokens or is aborted."""
    clock.join(slot)
    try:
        await slot.done
    except asyncio.CancelledError:  # the handler is cancelled (the server stops): out of the batch
        slot.drop()
        raise


async def _linger(turn: Turn, progress: _Progress) -> None:
    """Keep generating after the client has gone, until the answer is done or the request is aborted.

    Real SGLang has been reported to do this (generation running on to max_tokens after a disconnect),
    which is why a client that gives up must also `POST /abort_request`: here too the request stays
    `active`, holding its slot, until one or the other happens."""
    if turn.active.aborted:
        return  # aborted first; the write that failed was the abort's own finish chunk, counted already
    for _ in range(progress.sent, turn.plan.completion_tokens):
        await turn.active.sleep(turn.itl)
        if turn.active.aborted:  # set by an abort while this task slept (mypy keeps the narrowing)
            turn.stats.aborted += 1  # type: ignore[unreachable]  # see the line above
            return


async def stream(http_request: web.Request, turn: Turn) -> web.StreamResponse:
    plan, stats = turn.plan, turn.stats
    encoder = ChunkEncoder(turn.rid, turn.request.model)
    response = web.StreamResponse(status=200, headers=_SSE_HEADERS)
    await response.prepare(http_request)
    progress = _Progress()
    finished = False  # stop, length or tool_calls; anything else ends as an abort in SGLang's metrics
    try:
        if turn.clock is None:
            await _send_tokens(response, turn, encoder, progress)
        elif turn.target > 0:
            # SGLang's StreamingResponse sends its headers at once, and the writer needs them out first.
            await response.write(b"")
            writer = _StepWriter(http_request, response, turn, encoder, progress)
            await _in_batch(turn.clock, Slot(turn.active, turn.target, turn.prompt_tokens, writer))
            if progress.disconnected:  # it lingered in the batch until done or aborted
                stats.aborted += turn.active.aborted
                return response
        sent = progress.sent
        tail = b"" if progress.role_sent else encoder.role()
        if turn.active.aborted:
            stats.aborted += 1
            tail += encoder.finish("abort", None)
        elif turn.fault_fires(sent):
            stats.faults += 1
            if turn.faults.cut_after is not None:
                _cut_connection(http_request)
                return response
            code = turn.faults.stream_error
            assert code is not None
            stats.errors += 1
            tail = stream_error_event(fault_message(code), code)
        else:
            stats.completed += 1
            finished = True
            tail += encoder.finish(plan.finish_reason, plan.matched_stop)
        if turn.request.include_usage:
            tail += encoder.usage(turn.prompt_tokens, sent, turn.reasoning_sent(sent))
        await response.write(tail + DONE)
        await response.write_eof()
    except ConnectionResetError:
        stats.disconnected += 1
        if turn.clock is None:
            await _linger(turn, progress)
    except asyncio.CancelledError:
        stats.disconnected += 1
        raise
    finally:
        stats.completion_tokens += progress.sent
        turn.observe(progress.sent, progress.first_at, progress.last_at, aborted=not finished)
    return response


async def complete(http_request: web.Request, turn: Turn) -> web.StreamResponse:
    """Non-streamed delivery: wait as long as streaming would have taken, then answer."""
    plan, active, stats = turn.plan, turn.active, turn.stats
    if turn.clock is not None:
        sent = await _complete_in_batch(turn, turn.clock)
    else:
        sent = await _complete_on_own_timer(turn)
    stats.completion_tokens += sent
    # Not streamed, SGLang's tokenizer manager gets the one output at the end: the first token is then.
    turn.observe(sent, time.monotonic(), None, aborted=active.aborted or turn.fault_fires(sent))

    if not active.aborted and turn.fault_fires(sent):
        stats.faults += 1
        if turn.faults.cut_after is not None:
            _cut_connection(http_request)
            return web.Response(status=200)  # never reaches the client: the socket is gone
        assert turn.faults.stream_error is not None
        raise fault_error(turn.faults.stream_error)

    n_reasoning = turn.reasoning_sent(sent)
    reasoning = "".join(plan.reasoning[:n_reasoning])
    rest = sent - n_reasoning
    content = "".join(plan.content[:rest])
    tool_calls = None
    if plan.tool_name is not None and rest > 0:
        arguments = "".join(plan.tool_args[: rest - 1])
        tool_calls = [
            {
                "id": _tool_call_id(),
                "index": 0,
                "type": "function",
                "function": {"name": plan.tool_name, "arguments": arguments},
            }
        ]
    if active.aborted:
        stats.aborted += 1
        finish, matched = "abort", None
    else:
        stats.completed += 1
        finish, matched = plan.finish_reason, plan.matched_stop
        if finish == "tool_calls":
            matched = None  # the non-streamed tool-call path clears it; the stream keeps it
    body = completion_body(
        chunk_id=turn.rid,
        model=turn.request.model,
        content=content,
        reasoning=reasoning,
        tool_calls=tool_calls,
        finish_reason=finish,
        matched_stop=matched,
        usage=usage_dict(turn.prompt_tokens, sent, n_reasoning),
    )
    return web.Response(text=dumps(body), content_type="application/json")


async def _complete_on_own_timer(turn: Turn) -> int:
    """Wait as long as the stream would have taken; returns the tokens generated by then."""
    target = turn.target
    loop = asyncio.get_running_loop()
    started = loop.time()
    duration = turn.ttft + turn.itl * max(target - 1, 0)

    def generated() -> int:
        """Tokens generated by now, on the streaming schedule."""
        elapsed = loop.time() - started
        if elapsed < turn.ttft:
            return 0
        return min(target, 1 + int((elapsed - turn.ttft) / turn.itl)) if turn.itl > 0 else target

    try:
        await turn.active.sleep(duration)
    except asyncio.CancelledError:  # the client went away: SGLang ends the request as aborted
        turn.observe(generated(), None, None, aborted=True)
        raise
    return generated() if turn.active.aborted else target


async def _complete_in_batch(turn: Turn, clock: DecodeClock) -> int:
    """The request takes its place in the decode batch like a stream, unwritten; returns its tokens."""
    if turn.target == 0:
        return 0
    slot = Slot(turn.active, turn.target, turn.prompt_tokens, None)
    try:
        await _in_batch(clock, slot)
    except asyncio.CancelledError:
        turn.observe(slot.sent, None, None, aborted=True)
        raise
    return slot.sent


async def reject_stream(
    http_request: web.Request, *, message: str, code: int, usage: bytes | None
) -> web.StreamResponse:
    """A streamed request the scheduler aborts before any output, e.g. an invalid grammar.

    SGLang has already committed to the 200 by then, so the error is an SSE event.
    """
    response = web.StreamResponse(status=200, headers=_SSE_HEADERS)
    await response.prepare(http_request)
    try:
        await response.write(stream_error_event(message, code) + (usage or b"") + DONE)
        await response.write_eof()
    except ConnectionResetError:
        pass
    return response
