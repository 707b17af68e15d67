"""The generation job: one request through ArkModelLink's typed stream, every delta published."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from arkq.contract import (
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    GenerationRequest,
    JobResult,
    ReasoningEvent,
    ResetEvent,
    StartedEvent,
    Timings,
    TokenEvent,
    ToolCallEvent,
    describe_validation_error,
    result_key,
)
from config_module.settings import ArkConfig
from model_module import ArkModelLink, Finish, ModelError, ReasoningDelta, TextDelta, ToolCallDelta
from model_module.errors import stream_incomplete
from worker.publisher import EventPublisher

logger = logging.getLogger("arkq.worker")


class InvalidJob(ValueError):
    """The payload is not a GenerationRequest: the job fails alone, it is never retried."""


class GaveUp(Exception):
    """The job was started `worker.max_tries` times already (crash restarts included)."""


def parse_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> GenerationRequest:
    if "undecodable" in kwargs:
        raise InvalidJob(str(kwargs["undecodable"]))
    if len(args) != 1 or kwargs:
        raise InvalidJob("a job takes exactly one argument, the GenerationRequest object")
    try:
        return GenerationRequest.model_validate(args[0])
    except ValidationError as error:
        raise InvalidJob(f"invalid generation request: {describe_validation_error(error)}") from None


@dataclass
class Output:
    """What one attempt produced so far, for `done`, the stored result and timings."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    first_token_at: float | None = None

    def mark_first(self) -> None:
        if self.first_token_at is None:
            self.first_token_at = time.time()

    def add_tool_call(self, delta: ToolCallDelta) -> None:
        call = self.tool_calls.setdefault(
            delta.index, {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
        )
        if delta.id:
            call["id"] = delta.id
        if delta.name:
            call["function"]["name"] = delta.name
        call["function"]["arguments"] += delta.arguments


async def generate(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """arq entry point. Always ends the job with exactly one terminal event and a stored result; only
    cancellation (shutdown, abort) escapes, so that arq can hand the job to another worker."""
    config: ArkConfig = ctx["config"]
    redis: Redis = ctx["redis"]
    job_id: str = ctx["job_id"]
    publisher = await EventPublisher.open(
        redis, job_id, channel_prefix=config.streaming.channel_prefix, log_ttl_s=config.streaming.replay_ttl_s
    )
    if publisher.ended:
        # Ended in an earlier attempt whose worker died before arq recorded it: nothing more to say.
        return {"status": "ended before"}
    attempt: int = ctx["job_try"]
    if publisher.next_seq > 0:
        await publisher.publish(ResetEvent, reason=f"attempt {attempt} starts the job over")
    started_at = time.time()
    await publisher.publish(StartedEvent, attempt=attempt, worker=ctx["worker_name"])
    result = JobResult(
        job_id=job_id,
        status="error",
        attempts=attempt,
        timings=Timings(
            enqueued_at=ctx["enqueue_time"].timestamp(), started_at=started_at, finished_at=started_at
        ),
    )
    output = Output()
    try:
        async with asyncio.timeout(config.worker.job_timeout_s):
            if attempt > config.worker.max_tries:
                raise GaveUp(f"gave up after {config.worker.max_tries} attempts (worker.max_tries)")
            request = parse_payload(args, kwargs)
            finish = await _stream(ctx["link"], request, publisher, output)
    except InvalidJob as error:
        result.error = ErrorInfo(kind="invalid_job", message=str(error))
    except GaveUp as error:
        result.error = ErrorInfo(kind="max_tries", message=str(error))
    except ModelError as error:
        result.error = ErrorInfo(kind=error.kind, message=str(error), retryable=error.retryable)
    except TimeoutError:
        limit = config.worker.job_timeout_s
        result.error = ErrorInfo(kind="timeout", message=f"job ran past worker.job_timeout_s={limit}")
    except Exception as error:  # a bug must fail this job, never the worker
        logger.exception("job %s failed unexpectedly", job_id)
        result.error = ErrorInfo(kind="internal", message=f"{type(error).__name__}: {error}")
    else:
        result.status = "done"
        result.finish_reason, result.usage = finish.reason, finish.usage
        result.parsed = _parse_json(output.text) if request.json_schema else None

    result.text = "".join(output.text)
    result.reasoning = "".join(output.reasoning)
    result.tool_calls = [output.tool_calls[index] for index in sorted(output.tool_calls)]
    result.timings.first_token_at = output.first_token_at
    result.timings.finished_at = time.time()
    await _store(redis, result, config.worker.keep_result_s)
    if result.error is None:
        await publisher.publish(
            DoneEvent, finish_reason=result.finish_reason, usage=result.usage, text=result.text
        )
    else:
        await publisher.publish(ErrorEvent, **result.error.model_dump())
    return {"status": result.status}


async def _stream(
    link: ArkModelLink, request: GenerationRequest, publisher: EventPublisher, output: Output
) -> Finish:
    stream = link.stream(
        request.messages,
        request.json_schema,
        max_tokens=request.max_tokens,
        temperature=request.temperature,
        model=request.model,
        rid=publisher.job_id,
        tools=request.tools,
    )
    # aclosing: a job stopped mid-stream closes its HTTP stream at once, freeing the server's slot.
    async with aclosing(stream) as deltas:
        async for delta in deltas:
            if isinstance(delta, TextDelta):
                output.mark_first()
                output.text.append(delta.text)
                await publisher.publish(TokenEvent, text=delta.text)
            elif isinstance(delta, ReasoningDelta):
                output.mark_first()
                output.reasoning.append(delta.text)
                await publisher.publish(ReasoningEvent, text=delta.text)
            elif isinstance(delta, ToolCallDelta):
                output.mark_first()
                output.add_tool_call(delta)
                await publisher.publish(
                    ToolCallEvent, index=delta.index, id=delta.id, name=delta.name, arguments=delta.arguments
                )
            elif isinstance(delta, Finish):
                return delta
    raise stream_incomplete("no finish event")


def _parse_json(pieces: list[str]) -> Any:
    try:
        return json.loads("".join(pieces))
    except ValueError:
        return None  # e.g. cut by max_tokens: the text is still the result


async def _store(redis: Redis, result: JobResult, keep_result_s: float) -> None:
    await redis.set(result_key(result.job_id), result.model_dump_json(), px=int(keep_result_s * 1000))
