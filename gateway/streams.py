"""A job's events as HTTP streams: OpenAI's chunk stream for chat completions, and the resumable
event stream of the jobs API, both read in batches (`Job.event_batches`) through the producer's
shared subscription."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from sse_starlette import EventSourceResponse
from starlette.requests import Request

from arkq.contract import TERMINAL_EVENT_TYPES, JobResult, encode_event
from arkq.errors import ArkqError, JobLost
from gateway.chat import ChatCall, ChunkWriter
from gateway.errors import ApiError, api_error
from producer import Job

if TYPE_CHECKING:
    from gateway.app import Gateway

#: How a failed job's error kind answers a non-streamed request.
FAILURE_STATUS = {
    "bad_request": 400,
    "context_overflow": 400,
    "cancelled": 409,
    "expired": 504,
    "timeout": 504,
}


def job_failure(result: JobResult) -> ApiError:
    """The HTTP error for a job that ended without an answer."""
    if result.status == "cancelled":
        return ApiError(409, f"job {result.job_id} was cancelled", code="job_cancelled")
    kind = result.error.kind if result.error is not None else "error"
    message = result.error.message if result.error is not None else "the job failed"
    status = FAILURE_STATUS.get(kind, 502)
    kind_type = "invalid_request_error" if status == 400 else "server_error"
    return ApiError(status, f"job {result.job_id} failed ({kind}): {message}", type=kind_type, code=kind)


def _error_frame(error: ApiError, *, event: str | None = None) -> bytes:
    return sse_frame(json.dumps(error.body()).encode(), event=event)


def sse_frame(data: bytes, *, event: str | None = None, id: int | None = None) -> bytes:
    """One server-sent event. `data` is one line (compact JSON, or `[DONE]`): what every event here is.
    Many frames go out in one write, which sse-starlette would send one by one."""
    head = b""
    if id is not None:
        head += b"id: %d\r\n" % id
    if event is not None:
        head += b"event: %s\r\n" % event.encode()
    return head + b"data: " + data + b"\r\n\r\n"


async def wait_for_result(
    gateway: Gateway, request: Request, job: Job, *, cancel_on_disconnect: bool
) -> JobResult | None:
    """The job's result once it ends; None if the client went first, having cancelled the job (when
    asked to)."""

    async def ended() -> JobResult:
        async for event in job.events():
            if event.type in TERMINAL_EVENT_TYPES:
                break
        result = await job.fetch_result()
        if result is None:
            raise JobLost(job.id, f"job {job.id} ended but its result has expired")
        return result

    async def client_gone() -> None:
        # The body has been read: what the server hears next from the client is that it left.
        while (await request.receive())["type"] != "http.disconnect":
            pass

    waiting = asyncio.create_task(ended())
    watching = asyncio.create_task(client_gone())
    try:
        await asyncio.wait({waiting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not waiting.done():
            waiting.cancel()
            if cancel_on_disconnect:
                gateway.in_background(job.cancel())
    if not waiting.done() or waiting.cancelled():
        return None  # the client is gone: nobody reads the answer
    return waiting.result()


def chat_stream(
    gateway: Gateway,
    request: Request,
    job: Job,
    call: ChatCall,
    *,
    cancel_on_disconnect: bool,
    headers: Mapping[str, str],
) -> EventSourceResponse:
    """OpenAI's `chat.completion.chunk` stream of the job, then `data: [DONE]`.

    Text once sent is never sent again: if the job starts over after output went out (a `reset`), the
    stream ends with an error naming the job, whose final answer the jobs API then has."""

    async def chunks() -> AsyncIterator[bytes]:
        writer = ChunkWriter(job.id, call.model, include_usage=call.include_usage)
        finished = False
        sent = False
        try:
            async for batch in job.event_batches():
                frames: list[bytes] = []
                for event in batch:
                    if event.type == "reset" and sent:
                        finished = True
                        restarted = ApiError(
                            502,
                            f"job {job.id} started over after part of its answer was sent ({event.reason}); "
                            f"it goes on: read its final answer at GET /v1/jobs/{job.id}",
                            type="server_error",
                            code="job_restarted",
                        )
                        frames.append(_error_frame(restarted))
                        break
                    for chunk in writer.chunks(event):
                        sent = sent or event.type in {"token", "reasoning", "tool_call"}
                        frames.append(sse_frame(json.dumps(chunk).encode()))
                    if event.type == "done":
                        finished = True
                        frames.append(sse_frame(b"[DONE]"))
                        break
                    if event.type in {"error", "cancelled"}:
                        finished = True
                        result = await job.fetch_result()
                        failed = ApiError(502, "the job failed") if result is None else job_failure(result)
                        frames.append(_error_frame(failed))
                        break
                if frames:
                    yield b"".join(frames)
                if finished:
                    return
        except ArkqError as error:
            finished = True  # the job may be fine; this stream cannot follow it
            yield _error_frame(api_error(error))
        finally:
            if not finished and cancel_on_disconnect:
                gateway.in_background(job.cancel())

    return EventSourceResponse(chunks(), headers=dict(headers), ping=gateway.config.gateway.sse_heartbeat_s)


def event_stream(
    gateway: Gateway, job: Job, from_seq: int, *, headers: Mapping[str, str]
) -> EventSourceResponse:
    """The job's events from `from_seq`: `id:` the seq, `event:` the type, `data:` the event's JSON.
    Ends after the terminal event. A reader leaving never cancels the job."""

    async def events() -> AsyncIterator[bytes]:
        try:
            async for batch in job.event_batches(from_seq=from_seq):
                yield b"".join(sse_frame(encode_event(e), event=e.type, id=e.seq) for e in batch)
        except ArkqError as error:
            # Not an arkq event: the stream cannot go on (the job was lost, Redis is gone). A client
            # that reconnects with Last-Event-ID resumes where it was.
            yield _error_frame(api_error(error), event="stream_error")

    return EventSourceResponse(events(), headers=dict(headers), ping=gateway.config.gateway.sse_heartbeat_s)
