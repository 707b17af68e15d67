"""A test playing the worker for a job the producer side enqueued: it reads the request from the queue
and publishes the events it chooses, as the worker does (log first, then the channel; a terminal
event's result stored before it). For tests of what the producer side makes of a job's events, without
a worker process and an emulator."""

from __future__ import annotations

import asyncio
import json
import time

from redis.asyncio import Redis

from arkq.contract import (
    CancelledEvent,
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    GenerationRequest,
    JobResult,
    StartedEvent,
    Timings,
    TokenEvent,
    encode_event,
)
from arkq.keys import arq_job_key, cancel_key, event_channel, event_log_key, result_key
from config_module.loader import load_config

CHANNEL_PREFIX = load_config({}).streaming.channel_prefix
Scripted = type | tuple[type, dict[str, object]]
STARTED = (StartedEvent, {"attempt": 1, "worker": "test:1"})


def token(text: str) -> tuple[type, dict[str, object]]:
    return TokenEvent, {"text": text}


def done(text: str, finish_reason: str = "stop") -> tuple[type, dict[str, object]]:
    return DoneEvent, {"finish_reason": finish_reason, "usage": {"completion_tokens": 2}, "text": text}


async def queued_job(redis: Redis, timeout: float = 5) -> tuple[str, GenerationRequest]:
    """The first job in the queue, and what it asks for, once it is there."""
    deadline = time.monotonic() + timeout
    while not (queued := await redis.zrange("arq:queue", 0, 0)):
        assert time.monotonic() < deadline, "nothing was enqueued"
        await asyncio.sleep(0.005)  # the poll interval
    job_id = queued[0].decode()
    envelope = json.loads(await redis.get(arq_job_key(job_id)))
    return job_id, GenerationRequest.model_validate(envelope["a"][0])


async def publish(redis: Redis, job_id: str, *events: Scripted) -> None:
    """Append each event to the job's log and publish it; a terminal one stores the job's result first."""
    for item in events:
        model, fields = item if isinstance(item, tuple) else (item, {})
        event = model(job_id=job_id, seq=await redis.llen(event_log_key(job_id)), **fields)
        if model in (DoneEvent, ErrorEvent, CancelledEvent):
            await redis.set(result_key(job_id), result_for(event).model_dump_json())
        await redis.rpush(event_log_key(job_id), encode_event(event))
        await redis.publish(event_channel(CHANNEL_PREFIX, job_id), encode_event(event))


def result_for(event: DoneEvent | ErrorEvent | CancelledEvent) -> JobResult:
    now = time.time()
    timings = Timings(enqueued_at=now, started_at=now, finished_at=now)
    if isinstance(event, DoneEvent):
        return JobResult(job_id=event.job_id, status="done", text=event.text, timings=timings)
    if isinstance(event, ErrorEvent):
        error = ErrorInfo(kind=event.kind, message=event.message)
        return JobResult(job_id=event.job_id, status="error", error=error, timings=timings)
    return JobResult(job_id=event.job_id, status="cancelled", timings=timings)


async def cancel_requested(redis: Redis, job_id: str) -> bool:
    """Whether the job was cancelled: its cancel flag (for a running job's worker), or its stored
    `cancelled` result (a queued job, ended by the cancel itself)."""
    stored = await redis.get(result_key(job_id))
    cancelled = stored is not None and JobResult.model_validate_json(stored).status == "cancelled"
    return cancelled or bool(await redis.exists(cancel_key(job_id)))
