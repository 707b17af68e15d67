"""`QueuedModelLink`: the queue behind `ArkModelLink`'s API, so that an agent moves onto it unchanged.

ARKOS agents call their model through a link (`Agent(llm=ArkModelLink(...))`, then
`await self.llm.generate_response(context, json_schema)`). Handed a `QueuedModelLink` instead, every
call becomes a job: enqueued, run by whichever worker is free, followed through its events. The agent
gains what jobs have (a worker crash does not lose the call, any number of workers share the load, a
call can be cancelled from anywhere) and keeps what it relies on:

* the same methods and signatures, the same answers, the same typed stream events
  (`arkq.stream_events`: the very classes `ArkModelLink.stream` yields);
* the same failures: a job's error is the `ModelError` the direct link would have raised (its kind,
  status and `retryable`; the worker reports that error itself), and the queue's own failures are the
  `ModelError` of the nearest server failure (Redis unreachable: `connect`; the queue full:
  `rate_limit`), chained to the original, so an agent's error handling does not change;
* the caller leaving (its task cancelled, a timeout, a web request gone, a stream closed early)
  cancels the job, so no generation runs on for nobody; a job cancelled from elsewhere (`arkq cancel`)
  raises `JobCancelled`, never a silent empty answer.

Like the rest of the producer, it never loads the LLM client or the worker: a web backend that runs
agents on the queue pays for Redis and pydantic only.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from arkq.connection import connect
from arkq.contract import (
    CancelledEvent,
    DoneEvent,
    ErrorEvent,
    Event,
    ReasoningEvent,
    ResetEvent,
    TokenEvent,
    ToolCallEvent,
)
from arkq.errors import (
    ERROR_KINDS,
    ArkqError,
    ErrorKind,
    InvalidRequest,
    JobLost,
    JobNotFound,
    ModelError,
    QueueFull,
    RedisBusy,
    RedisFailure,
    RedisOutOfMemory,
    RedisUnavailable,
    StreamReset,
)
from arkq.link_calls import LinkCalls, MessageLike
from arkq.loop_bound import Keeper, close_with_loop, release
from arkq.stream_events import Finish, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from config_module import loader
from config_module.settings import ArkConfig
from producer.job import Job
from producer.producer import Producer, RequestOptions

logger = logging.getLogger(__name__)


#: A job's error kinds that are not an LLM call's but the worker's own, each as the `ModelError` kind of
#: the direct link's nearest failure, and whether the same call may succeed later.
WORKER_ERROR_KINDS: dict[str, tuple[ErrorKind, bool]] = {
    "expired": ("timeout", True),  # still queued after queue.job_expiry_s: no worker took it in time
    "max_tries": ("server_error", True),  # worker.max_tries attempts, each lost (workers died under it)
    "internal": ("server_error", False),  # a bug in arkq failed the job
    "invalid_job": ("bad_request", False),  # the worker could not read the request
}

#: The parameters of `ArkModelLink.stream` that a job cannot carry, and why.
_NOT_THROUGH_THE_QUEUE = {
    "rid": "the worker names each attempt's request itself (`<job id>-<attempt>`), to abort it",
    "extra_body": "a job carries the request's documented fields only (`GenerationRequest`)",
    "budget": "a job's retries are its worker's (`llm.max_retries` per job, over all its attempts)",
}
#: The `sampling` parameters a job carries, as `Producer.enqueue` takes them.
_SAMPLING_OPTIONS = frozenset(RequestOptions.__optional_keys__) - {"json_object"}


def model_error_of_job(event: ErrorEvent) -> ModelError:
    """The `ModelError` that a job's `error` event stands for: for an LLM call's failure, the same kind,
    HTTP status, `retryable` and `retry_after` as the direct link's error (the event carries its report
    and the last two); for the worker's own kinds, the nearest (`WORKER_ERROR_KINDS`)."""
    kind, message = event.kind, event.message
    if kind in ERROR_KINDS:
        return ModelError.from_report(
            cast(ErrorKind, kind), message, retry_after=event.retry_after, retryable=event.retryable
        )
    model_kind, retryable = WORKER_ERROR_KINDS.get(kind, ("server_error", False))
    return ModelError(model_kind, f"{kind}: {message}", retryable=retryable)


def model_error_of_queue(error: ArkqError) -> ModelError:
    """The queue's own failure as the `ModelError` of the nearest server failure, for an agent that
    handles the direct link's errors: the queue is its way to the model."""
    if isinstance(error, QueueFull):
        return ModelError("rate_limit", f"the queue is full: {error}")
    if isinstance(error, RedisUnavailable):
        return ModelError("connect", f"cannot reach the queue: {error}")
    if isinstance(error, RedisFailure):
        passing = isinstance(error, RedisOutOfMemory | RedisBusy)  # results expire; a script ends
        return ModelError("server_error", f"the queue refused the call: {error}", retryable=passing)
    return ModelError("stream", f"the job was lost: {error}")  # JobLost, JobNotFound


@dataclass
class _OwnProducer:
    """The producer a link opened itself, on the loop its Redis connections belong to."""

    producer: Producer
    redis: Redis
    loop: asyncio.AbstractEventLoop
    keeper: Keeper


class QueuedModelLink(LinkCalls):
    """`ArkModelLink`'s API with every call run as a job on the queue (see the module's docstring).

    `model_name`, `max_tokens` and `temperature` are what each job asks for, from `config.llm` when left
    None, as the direct link takes them. `base_url` is accepted so that the swap is one word, and not
    used: the workers reach the model at their own `llm.base_url`. The queue is `producer`, an open
    `Producer` the caller keeps and closes, or else one the link opens on first use at `redis_url`
    (default `redis.url`) and closes in `aclose()`, or when its event loop ends if nobody closes it.
    """

    def __init__(
        self,
        model_name: str | None = None,
        base_url: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        *,
        redis_url: str | None = None,
        producer: Producer | None = None,
    ) -> None:
        if producer is not None and redis_url is not None:
            raise ValueError("give redis_url or producer, not both: a producer has its Redis already")
        self._config: ArkConfig = producer.config if producer is not None else loader.config
        llm = self._config.llm
        self.model_name: str = llm.model_name if model_name is None else model_name
        self.max_tokens: int = _check_max_tokens(llm.max_tokens if max_tokens is None else max_tokens)
        self.temperature: float = _check_temperature(llm.temperature if temperature is None else temperature)
        if not self.model_name:
            raise ValueError("model_name must not be empty")
        if base_url is not None and base_url != llm.base_url:
            logger.warning(
                "QueuedModelLink ignores base_url=%r: its calls reach the model at the workers' llm.base_url",
                base_url,
            )
        self._redis_url = redis_url
        self._lent = producer
        self._own: _OwnProducer | None = None
        # Loops in several threads may share the link, as they may share an ArkModelLink.
        self._own_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"QueuedModelLink(model_name={self.model_name!r}, max_tokens={self.max_tokens!r}, "
            f"temperature={self.temperature!r})"
        )

    # -- the queue's lifecycle --------------------------------------------------------------------

    def _producer(self) -> Producer:
        """The lent producer, or the link's own, opened on first use on the running loop. A Redis
        client's connections belong to the loop that opened them, so a link used from a new loop (a
        second `asyncio.run`) opens a new client there instead of using a broken pool."""
        if self._lent is not None:
            return self._lent
        loop = asyncio.get_running_loop()
        with self._own_lock:
            own = self._own
            if own is None or own.loop is not loop:
                if own is not None:
                    release(own.keeper)  # its loop has closed it, or may still be using it
                redis = connect(self._config, self._redis_url)
                producer = Producer(config=self._config, redis=redis)
                own = self._own = _OwnProducer(producer, redis, loop, close_with_loop(redis.aclose))
            return own.producer

    async def aclose(self) -> None:
        """Close the link's own Redis connections (never a lent producer's). The link stays usable: a
        later call opens new ones."""
        with self._own_lock:
            own, self._own = self._own, None
        if own is not None:
            release(own.keeper)
            await own.redis.aclose()

    # -- calls --------------------------------------------------------------------------------------

    async def generate_response(
        self, messages: Sequence[MessageLike], json_schema: Mapping[str, Any] | None = None
    ) -> str:
        """The model's whole answer: one job, awaited to its end."""
        job = await self._submit(messages, json_schema)
        async with aclosing(self._events(job)) as events:
            async for event in events:
                if isinstance(event, DoneEvent):
                    return event.text
        raise ModelError("stream", f"job {job.id}: its events stopped before its end")  # never: see _events

    async def stream(
        self,
        messages: Sequence[MessageLike],
        json_schema: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        rid: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        budget: object | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The model's answer as typed events, ending with exactly one `Finish`, as `ArkModelLink.stream`.

        A job that starts over (`reset`: its stream failed, or its worker died, where it could not go
        on from the text already streamed) before anything was yielded is followed on silently; after
        output was yielded, it raises `ModelError("stream")` as the direct link does for a stream
        broken after its first delta (and the job is cancelled). `sampling` takes `tool_choice`,
        `top_p`, `stop`, `seed`, `presence_penalty`, `frequency_penalty` and a JSON-object
        `response_format`. `rid`, `extra_body` and `budget` belong to a direct call and are refused
        (`InvalidRequest`): the worker sets them for each attempt.
        """
        given = {"rid": rid, "extra_body": extra_body, "budget": budget}
        for name, value in given.items():
            if value is not None:
                reason = _NOT_THROUGH_THE_QUEUE[name]
                raise InvalidRequest(f"{name}: not settable through the queue: {reason}", field=name)
        job = await self._submit(
            messages,
            json_schema,
            max_tokens=max_tokens,
            temperature=temperature,
            model=model,
            tools=tools,
            sampling=sampling,
        )
        shown = False
        async with aclosing(self._events(job)) as events:
            async for event in events:
                if isinstance(event, TokenEvent):
                    shown = True
                    yield TextDelta(event.text)
                elif isinstance(event, ReasoningEvent):
                    shown = True
                    yield ReasoningDelta(event.text)
                elif isinstance(event, ToolCallEvent):
                    shown = True
                    yield ToolCallDelta(event.index, event.id, event.name, event.arguments)
                elif isinstance(event, ResetEvent) and shown:
                    raise ModelError(
                        "stream",
                        f"job {job.id} started over after part of its answer was streamed: {event.reason}",
                    ) from StreamReset(job.id, event.reason)
                elif isinstance(event, DoneEvent):
                    yield Finish(event.finish_reason, event.usage)

    # -- one job ------------------------------------------------------------------------------------

    async def _submit(
        self,
        messages: Sequence[MessageLike],
        json_schema: Mapping[str, Any] | None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> Job:
        """Enqueue the call as a job. Invalid parameters raise `InvalidRequest` (a ValueError, as the
        direct link's checks are), naming the field, before anything reaches Redis."""
        producer = self._producer()
        schema, options = _request_options(json_schema, sampling)
        # Chosen here, so that a caller that leaves while the enqueue is under way cancels it all the same.
        job_id = uuid.uuid4().hex
        try:
            return await producer.enqueue(
                messages,
                schema,
                max_tokens=self.max_tokens if max_tokens is None else _check_max_tokens(max_tokens),
                temperature=self.temperature if temperature is None else _check_temperature(temperature),
                job_id=job_id,
                model=self.model_name if model is None else model,
                tools=None if tools is None else [dict(tool) for tool in tools],
                **options,
            )
        except asyncio.CancelledError:
            await cancel_left(producer.job(job_id))
            raise
        except (QueueFull, RedisFailure) as error:
            raise model_error_of_queue(error) from error

    async def _events(self, job: Job) -> AsyncGenerator[Event, None]:
        """The job's events, the last yielded its `done`. Its `error` raises the `ModelError` it stands
        for, `cancelled` raises `JobCancelled`, and the queue failing raises the `ModelError` of its
        nearest server failure. A caller that leaves before the end (cancelled, timed out, a stream
        closed early, an error raised) cancels the job: nobody is waiting for its answer any more."""
        ended = False
        try:
            async with aclosing(job.events()) as events:
                async for event in events:
                    if isinstance(event, ErrorEvent):
                        ended = True
                        raise model_error_of_job(event)
                    if isinstance(event, CancelledEvent):
                        ended = True
                        await job.result(timeout=None)  # raises JobCancelled, with the stored result
                    ended = isinstance(event, DoneEvent)
                    yield event
        except (JobLost, JobNotFound) as error:
            ended = True  # nothing is left to cancel
            raise model_error_of_queue(error) from error
        except RedisFailure as error:
            raise model_error_of_queue(error) from error
        finally:
            if not ended:
                await cancel_left(job)


#: Cancels under way for callers that left, held so that none is garbage-collected half-way.
_cancelling: set[asyncio.Task[None]] = set()


async def cancel_left(job: Job) -> None:
    """Cancel `job`, whose caller left before its end, once Redis has the cancel. Shielded: the caller
    is usually being cancelled itself (its task cancelled, a timeout, a web request gone), and a second
    cancellation must not stop the cancel half-way; it then carries on alone. Its worker stops the job
    within `worker.lease_renew_s` and tells the server to abort it, which frees the GPU slot."""
    cancelling = asyncio.ensure_future(_cancel(job))
    _cancelling.add(cancelling)
    cancelling.add_done_callback(_cancelling.discard)
    await asyncio.shield(cancelling)


async def _cancel(job: Job) -> None:
    try:
        outcome = await job.cancel()
    except ArkqError as error:  # the call's own failure is what its caller hears about
        logger.warning("job %s: its caller left, and cancelling it failed: %s", job.id, error)
    else:
        logger.debug("job %s: its caller left; cancel: %s", job.id, outcome)


def _response_format(json_schema: Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, RequestOptions]:
    """The direct link sends `json_schema` as the server's `response_format`, whatever its type; a job
    has a field for each kind: a schema, or any JSON object."""
    kind = None if json_schema is None else json_schema.get("type")
    if json_schema is None or (kind == "text" and len(json_schema) == 1):
        return None, {}
    if kind == "json_object" and len(json_schema) == 1:
        return None, {"json_object": True}
    return dict(json_schema), {}


def _request_options(
    json_schema: Mapping[str, Any] | None, sampling: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, RequestOptions]:
    """The job's `json_schema` and further fields for the direct link's `json_schema` and `sampling`."""
    schema, options = _response_format(json_schema)
    for name, value in (sampling or {}).items():
        if name in _SAMPLING_OPTIONS:
            options[name] = value  # type: ignore[literal-required]  # a key of RequestOptions, checked above
        elif name == "response_format" and _response_format(value) == (None, {"json_object": True}):
            options["json_object"] = True
        else:
            raise InvalidRequest(
                f"sampling: {name!r} cannot go through the queue; it takes {sorted(_SAMPLING_OPTIONS)} "
                'and response_format {"type": "json_object"}',
                field="sampling",
            )
    return schema, options


def _check_max_tokens(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {value!r}")
    return value


def _check_temperature(value: float) -> float:
    # A float always: the job's field is strict, and the direct link sends `0` as `0.0` too.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise ValueError(f"temperature must be a number from 0 to 2, got {value!r}")
    return float(value)
