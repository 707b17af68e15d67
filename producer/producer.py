"""Enqueueing generation jobs, validated at the edge."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, Unpack

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError, RedisError

from arkq.connection import connect, redis_address, unreachable_reason
from arkq.contract import GenerationRequest, describe_validation_error
from arkq.envelope import serialize
from arkq.errors import InvalidRequest, RedisUnavailable
from arkq.keys import ARQ_JOB_EXPIRES_EXTRA_MS
from arkq.messages import Message
from arkq.status import FleetStatus, read_status
from config_module import loader
from config_module.settings import ArkConfig
from producer.deadline import redis_answers_within
from producer.enqueue import Owner, enqueue_generation
from producer.events import LiveFeed
from producer.hub import Hub
from producer.job import Job

#: Job IDs become parts of Redis keys and channel names: keep them printable and bounded.
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")


class RequestOptions(TypedDict, total=False):
    """A request's further fields, with OpenAI's meanings (`arkq.contract.GenerationRequest`)."""

    tool_choice: Literal["none", "auto", "required"] | dict[str, Any]
    json_object: bool
    top_p: float
    stop: str | list[str]
    seed: int
    presence_penalty: float
    frequency_penalty: float


class Producer:
    """Enqueues jobs and hands out `Job` handles. Use it as `async with Producer() as p:`.

    Settings come from the configuration (`config.yaml`, `ARK_*`); `redis_url` replaces `redis.url`, and
    `redis` lends an existing client (any `redis.asyncio.Redis`, e.g. over fakeredis), which the producer
    then does not close.

    Its jobs' readers share one subscription (`producer.hub`, opened by the first reader): following
    any number of jobs at once costs one Redis connection, and following one costs no connection's
    set-up.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        config: ArkConfig | None = None,
        redis: Redis | None = None,
    ):
        self.config = config or loader.config
        self._redis_url = redis_url
        self._redis = redis
        self._owns_redis = redis is None
        self._hub: Hub | None = None

    async def __aenter__(self) -> Self:
        if self._redis is None:
            # The first answer is asked by a client that does not retry: a refused connection or an
            # unknown host fails at once, not after redis.connect_timeout_s of trying again.
            probe = connect(self.config, self._redis_url, retry_s=0)
            try:
                async with redis_answers_within(probe, self.config.redis.connect_timeout_s):
                    await probe.ping()
            except RedisUnavailable as failure:
                cause = failure.__cause__
                said_so = isinstance(cause, BusyLoadingError | TimeoutError)  # reached and loading; silent
                if cause is None or said_so or not isinstance(cause, RedisError | OSError):
                    raise  # already named as it is
                reason = unreachable_reason(cause)
                raise RedisUnavailable(f"cannot reach Redis at {redis_address(probe)}: {reason}") from failure
            finally:
                await probe.aclose()
            self._redis = connect(self.config, self._redis_url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._hub is not None:
            hub, self._hub = self._hub, None
            await hub.aclose()
        if self._owns_redis and self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the producer is not open: use `async with Producer() as p:`")
        return self._redis

    async def status(self) -> FleetStatus:
        """The queue and its workers now (what `arkq status` shows): jobs queued, deferred and running,
        each live worker's heartbeat, the latest failures by kind. A few Redis commands, whatever the
        queue's length."""
        async with redis_answers_within(self.redis, self.config.redis.connect_timeout_s):
            return await read_status(self.redis, self.config.queue.name)

    def job(self, job_id: str) -> Job:
        """A handle on an existing job."""
        return Job(self.redis, job_id, config=self.config, follow=self.follow)

    async def follow(self, channel: str) -> LiveFeed:
        """A job's live channel, through the producer's shared subscription (opened on first use)."""
        if self._hub is None:
            redis = self.config.redis
            self._hub = Hub(
                self.redis, dead_after_s=redis.dead_after_s, connect_wait_s=redis.connect_timeout_s
            )
            self._hub.start()
        return await self._hub.follow(channel)

    def build_request(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        *,
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        **options: Unpack[RequestOptions],
    ) -> GenerationRequest:
        """The validated request, or InvalidRequest naming the field that is wrong. `options` are the
        request's further fields (`GenerationRequest`): tool_choice, json_object, top_p, stop, seed,
        presence_penalty, frequency_penalty."""
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidRequest(
                "messages: must be a list of messages (Message objects or role/content dicts)",
                field="messages",
            )
        fields: dict[str, Any] = {
            "messages": [_plain(message) for message in messages],
            "json_schema": json_schema,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "model": model,
            "tools": tools,
            "metadata": {} if metadata is None else metadata,
            **options,
        }
        try:
            return GenerationRequest.model_validate(fields)
        except ValidationError as error:
            first = error.errors()[0]["loc"] if error.errors() else ()
            raise InvalidRequest(
                f"invalid generation request: {describe_validation_error(error)}",
                field=str(first[0]) if first else None,
            ) from None

    async def enqueue(
        self,
        messages: Sequence[Message | Mapping[str, Any]],
        json_schema: dict[str, Any] | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        job_id: str | None = None,
        *,
        model: str | None = None,
        tools: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
        tenant: str | None = None,
        max_active: int = 0,
        **options: Unpack[RequestOptions],
    ) -> Job:
        """Validate and enqueue one generation job.

        A `job_id` makes the enqueue idempotent: while Redis still knows that job (queued, running, or
        its result or events kept, a cancelled one included), enqueueing it again returns a handle on
        it and runs nothing new. Idle workers are woken at once.

        `tenant` records who the job is for (`Job.tenant()`); with it, `max_active` > 0 bounds that
        tenant's jobs queued or running at once (`TenantLimitReached`, a QueueFull).

        Enqueueing a known `job_id` with another request (any field, metadata included) raises
        JobIdInUse (an InvalidRequest), having written nothing.

        Raises InvalidRequest (naming the field) or QueueFull, having written nothing, or a
        `RedisFailure` carrying the job's ID (`job_id`): after a `RedisUnavailable` the job may still
        have been queued, and enqueueing again with that ID is safe.
        """
        request = self.build_request(
            messages,
            json_schema=json_schema,
            max_tokens=max_tokens,
            temperature=temperature,
            model=model,
            tools=tools,
            metadata=metadata,
            **options,
        )
        payload = request.model_dump(mode="json")
        _refuse_oversized(payload, self.config.queue.max_payload_bytes)
        # The ID exists before anything is sent: a failure that may have queued the job carries it.
        if job_id is None:
            job_id = uuid.uuid4().hex
        elif not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
            raise InvalidRequest(
                f"job_id: {job_id!r} must be 1-128 letters, digits or _.:- and start with a letter or digit",
                field="job_id",
            )
        async with redis_answers_within(self.redis, self.config.redis.connect_timeout_s, enqueueing=job_id):
            await enqueue_generation(
                self.redis,
                job_id,
                payload,
                queue_name=self.config.queue.name,
                max_depth=self.config.queue.max_depth,
                owner=None if tenant is None else self._owner(tenant, max_active),
                keep_ms=self._keep_ms(),
            )
        return self.job(job_id)

    def _owner(self, tenant: str, max_active: int) -> Owner:
        if not tenant or not JOB_ID_PATTERN.fullmatch(tenant):
            raise InvalidRequest(f"tenant: {tenant!r} must be 1-128 letters, digits or _.:-", field="tenant")
        return Owner(tenant, max_active, self._keep_ms())

    def _keep_ms(self) -> int:
        """How long a record about a job is kept: as long as anything of the job (queued up to a day,
        then run, then its result and log)."""
        config = self.config
        keep_s = config.worker.job_timeout_s + max(config.worker.keep_result_s, config.streaming.replay_ttl_s)
        return ARQ_JOB_EXPIRES_EXTRA_MS + int(keep_s * 1000)


def _refuse_oversized(payload: dict[str, Any], limit: int) -> None:
    """InvalidRequest naming the largest field when the job's payload is over `limit` bytes."""
    size = len(serialize(payload))
    if size <= limit:
        return
    sizes = {field: len(serialize(value)) for field, value in payload.items() if value}
    largest = max(sizes, key=sizes.__getitem__)
    detail = f"{sizes[largest]} bytes"
    if largest == "messages":
        lengths = [len(serialize(message)) for message in payload["messages"]]
        biggest = max(range(len(lengths)), key=lengths.__getitem__)
        detail = (
            f"{len(lengths)} messages, {detail} (the largest, messages[{biggest}], {lengths[biggest]} bytes)"
        )
    raise InvalidRequest(
        f"{largest}: {detail} make the request {size} bytes, over queue.max_payload_bytes={limit}",
        field=largest,
    )


def _plain(message: Message | Mapping[str, Any]) -> Any:
    if isinstance(message, Message):
        return message.model_dump(exclude_none=True)
    return message
