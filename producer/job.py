"""A handle on one job: its events, its tokens, its result, its cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from functools import partial
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq import lease
from arkq.connection import reply
from arkq.contract import TERMINAL_EVENT_TYPES, Event, JobResult, parse_event
from arkq.envelope import enqueued_ms
from arkq.errors import JobCancelled, JobFailed, JobNotFound, StreamReset
from arkq.keys import arq_job_key, claim_key, event_log_key, lease_key, owner_key, result_key
from arkq.redis_failures import name_failure
from config_module.settings import ArkConfig
from producer.cancel import CancelOutcome, cancel_job
from producer.deadline import redis_answers_within
from producer.events import Follow, read_event_batches


@dataclass(frozen=True)
class JobState:
    """A job's state at one moment (`Job.state()`); `result` once it has ended."""

    status: Literal["queued", "running", "done", "error", "cancelled", "unknown"]
    enqueued_at: float | None
    result: JobResult | None = None


class Job:
    """Cheap to make (`Producer.job(job_id)`); every method asks Redis afresh."""

    def __init__(self, redis: Redis, job_id: str, *, config: ArkConfig, follow: Follow | None = None):
        self.id = job_id
        self._redis = redis
        self._config = config
        #: How its readers follow the live channel: its producer's shared subscription, or their own.
        self._follow = follow
        self._answer_within = config.redis.connect_timeout_s

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    async def exists(self) -> bool:
        """Whether Redis still knows the job: queued, running, or finished within its keep-result time."""
        keys = (arq_job_key(self.id), lease_key(self.id), event_log_key(self.id), result_key(self.id))
        async with redis_answers_within(self._redis, self._answer_within):
            return bool(await self._redis.exists(*keys))

    async def state(self) -> JobState:
        """Where the job is now: `queued` (or waiting to be retried), `running` (a worker holds its
        lease or arq's claim), ended (`done`, `error`, `cancelled`, with `result`), or `unknown` (Redis
        knows nothing of it, or it was lost). One round trip."""
        keys = (result_key(self.id), lease_key(self.id), claim_key(self.id), arq_job_key(self.id))
        async with redis_answers_within(self._redis, self._answer_within):
            stored, lease, claim, envelope = await reply(self._redis.mget(keys))
        if stored is not None:
            result = JobResult.model_validate_json(stored)
            return JobState(result.status, enqueued_at=result.timings.enqueued_at, result=result)
        enqueued = enqueued_ms(envelope)
        enqueued_at = None if enqueued is None else enqueued / 1000
        if lease is not None or claim is not None:
            return JobState("running", enqueued_at=enqueued_at)
        if envelope is not None:
            return JobState("queued", enqueued_at=enqueued_at)
        return JobState("unknown", enqueued_at=None)

    async def tenant(self) -> str | None:
        """The tenant the job was enqueued for (`enqueue(tenant=...)`), None if none or unknown."""
        async with redis_answers_within(self._redis, self._answer_within):
            owner = await self._redis.get(owner_key(self.id))
        return None if owner is None else owner.decode()

    async def is_pending(self) -> bool:
        """Whether the job is queued (or waiting for a retry) or running."""
        async with redis_answers_within(self._redis, self._answer_within):
            return await lease.is_held(self._redis, self.id)

    async def events(self, *, from_seq: int = 0, live: Follow | None = None) -> AsyncGenerator[Event, None]:
        """Every event from `from_seq`, in order, whenever it is called; ends after `done`, `error` or
        `cancelled`. Raises JobNotFound for an ID that Redis does not know, JobLost for a job that is no
        longer queued or running but never ended. A Redis restart is a pause, not an error; a Redis
        still gone after `redis.retry_s`, or refusing the reader, is the `RedisFailure` naming it."""
        async with aclosing(self.event_batches(from_seq=from_seq, live=live)) as batches:
            async for batch in batches:
                for event in batch:
                    yield event

    async def event_batches(
        self, *, from_seq: int = 0, live: Follow | None = None
    ) -> AsyncGenerator[list[Event], None]:
        """The events of `events()` in the batches they arrive in (a read of the log, the live messages
        waiting together): for a relay that writes each batch at once."""
        if not await self.exists():
            raise JobNotFound(self.id, f"no job {self.id!r} in Redis (never enqueued, or expired)")
        reader = read_event_batches(
            self._redis,
            self.id,
            channel_prefix=self._config.streaming.channel_prefix,
            is_pending=partial(lease.is_held, self._redis, self.id),
            from_seq=from_seq,
            retry_s=self._config.redis.retry_s,
            follow=self._follow if live is None else live,
        )
        # aclosing: a caller that stops early gives the pub/sub connection back now, not at GC.
        async with aclosing(reader) as batches:
            try:
                async for batch in batches:
                    yield batch
            except (RedisError, OSError) as error:
                raise name_failure(error) from error

    async def tokens(self) -> AsyncGenerator[str, None]:
        """The answer's text as it streams, token by token, from the latest attempt only.

        If the attempt being followed is voided (`reset`: its worker died, or its stream failed) after
        some of its tokens were yielded, raises StreamReset: drop what you have shown and call
        `tokens()` again, which yields the new attempt's tokens. A job that ends in `error` or
        `cancelled` raises JobFailed or JobCancelled at its end, as `result()` does."""
        start = await self._latest_attempt_seq()
        yielded = False
        async with aclosing(self.events(from_seq=start)) as events:
            async for event in events:
                if event.type == "token":
                    yielded = True
                    yield event.text
                elif event.type == "reset" and yielded:
                    raise StreamReset(self.id, event.reason)
                elif event.type in {"error", "cancelled"}:
                    await self.result(timeout=None)  # raises, with the stored result

    async def event_count(self) -> int:
        """How many events the job's log holds (the next event's seq)."""
        async with redis_answers_within(self._redis, self._answer_within):
            return int(await reply(self._redis.llen(event_log_key(self.id))))

    async def _latest_attempt_seq(self) -> int:
        """The seq of the last `reset` in the log (0 if none): earlier output is void."""
        async with redis_answers_within(self._redis, self._answer_within):
            history = await reply(self._redis.lrange(event_log_key(self.id), 0, -1))
        for seq in range(len(history) - 1, -1, -1):
            if b'"type":"reset"' in history[seq] and parse_event(history[seq]).type == "reset":
                return seq
        return 0

    async def text(self, timeout: float | None = 60) -> str:
        """The whole answer once the job is done (after any restarts): `(await job.result()).text`."""
        return (await self.result(timeout=timeout)).text

    async def fetch_result(self) -> JobResult | None:
        """The stored result if the job has ended, else None; never waits, never raises JobFailed."""
        async with redis_answers_within(self._redis, self._answer_within):
            raw = await self._redis.get(result_key(self.id))
        return None if raw is None else JobResult.model_validate_json(raw)

    async def result(self, timeout: float | None = 60) -> JobResult:
        """Wait up to `timeout` seconds for the job to end and return its result.

        Raises JobFailed when it ended in `error` (JobCancelled when cancelled), TimeoutError when it
        has not ended in time, JobNotFound for an unknown ID."""
        result = await self.fetch_result()
        if result is None:
            async with asyncio.timeout(timeout), aclosing(self.events()) as events:
                async for event in events:
                    if event.type in TERMINAL_EVENT_TYPES:
                        break
            result = await self.fetch_result()
            if result is None:
                raise JobNotFound(self.id, f"job {self.id!r} ended but its result has expired")
        if result.status == "cancelled":
            raise JobCancelled(result)
        if not result.ok:
            raise JobFailed(result)
        return result

    async def cancel(self) -> CancelOutcome:
        """Cancel the job. `cancelled`: it was queued and will never run; `cancelling`: its worker
        stops it at once (its HTTP stream closed, the server told to abort; within
        `worker.lease_renew_s`, should the worker have missed the cancel's message) and it ends with a
        `cancelled` event; `ended`: it had ended already; `unknown`: no such job."""
        async with redis_answers_within(self._redis, self._answer_within):
            return await cancel_job(self._redis, self.id, self._config)
