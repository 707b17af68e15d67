"""A handle on one job: its events, its tokens, its result."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing

from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from arkq.contract import TERMINAL_EVENT_TYPES, Event, JobResult, event_log_key, result_key
from producer.errors import JobFailed, JobNotFound
from producer.events import read_events


class Job:
    """Cheap to make (`Producer.job(job_id)`); every method asks Redis afresh."""

    def __init__(self, redis: Redis, job_id: str, *, channel_prefix: str):
        self.id = job_id
        self._redis = redis
        self._channel_prefix = channel_prefix

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    async def exists(self) -> bool:
        """Whether Redis still knows the job: queued, running, or finished within its keep-result time."""
        keys = (
            job_key_prefix + self.id,
            in_progress_key_prefix + self.id,
            event_log_key(self.id),
            result_key(self.id),
        )
        return await self._redis.exists(*keys) > 0

    async def is_pending(self) -> bool:
        """Whether the job is queued (or waiting for a retry) or running."""
        return await self._redis.exists(job_key_prefix + self.id, in_progress_key_prefix + self.id) > 0

    async def events(self) -> AsyncIterator[Event]:
        """Every event from seq 0, in order, whenever it is called; ends after `done`, `error` or
        `cancelled`. Raises JobNotFound for an ID that Redis does not know, JobLost for a job that is no
        longer queued or running but never ended."""
        if not await self.exists():
            raise JobNotFound(f"no job {self.id!r} in Redis (never enqueued, or expired)")
        reader = read_events(
            self._redis, self.id, channel_prefix=self._channel_prefix, is_pending=self.is_pending
        )
        # aclosing: a caller that stops early gives the pub/sub connection back now, not at GC.
        async with aclosing(reader) as events:
            async for event in events:
                yield event

    async def tokens(self) -> AsyncIterator[str]:
        """The answer's text as it streams, token by token."""
        async with aclosing(self.events()) as events:
            async for event in events:
                if event.type == "token":
                    yield event.text

    async def fetch_result(self) -> JobResult | None:
        """The stored result if the job has ended, else None; never waits, never raises JobFailed."""
        raw = await self._redis.get(result_key(self.id))
        return None if raw is None else JobResult.model_validate_json(raw)

    async def result(self, timeout: float | None = 60) -> JobResult:
        """Wait up to `timeout` seconds for the job to end and return its result.

        Raises JobFailed when it ended in `error` or `cancelled`, TimeoutError when it has not ended in
        time, JobNotFound for an unknown ID."""
        result = await self.fetch_result()
        if result is None:
            async with asyncio.timeout(timeout), aclosing(self.events()) as events:
                async for event in events:
                    if event.type in TERMINAL_EVENT_TYPES:
                        break
            result = await self.fetch_result()
            if result is None:
                raise JobNotFound(f"job {self.id!r} ended but its result has expired")
        if not result.ok:
            raise JobFailed(result)
        return result
