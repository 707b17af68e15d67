"""What a producer's caller may need to catch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.contract import JobResult


class InvalidRequest(ValueError):
    """The request was refused before anything reached Redis; the message names the field."""


class JobNotFound(LookupError):
    """Redis knows nothing of this job ID: never enqueued, or its events and result expired."""


class JobLost(LookupError):
    """The job is neither queued nor running, yet its events never reached an end: nothing more will
    come (arq dropped it without running it, or its events expired)."""


class JobFailed(Exception):
    """The job ended without a result text (`error` or `cancelled`); `result` holds why."""

    def __init__(self, result: JobResult):
        self.result = result
        error = result.error
        detail = f"{error.kind}: {error.message}" if error else result.status
        super().__init__(f"job {result.job_id} {result.status}: {detail}")

    @property
    def kind(self) -> str:
        return self.result.error.kind if self.result.error else self.result.status

    @property
    def retryable(self) -> bool:
        return bool(self.result.error and self.result.error.retryable)


class JobCancelled(JobFailed):
    """The job was cancelled (`job.cancel()`, `arkq cancel`)."""


class QueueFull(Exception):
    """`queue.max_depth` jobs are queued or running already; nothing was written."""


class RedisUnavailable(ConnectionError):
    """Redis did not answer within the producer's timeout (`redis.connect_timeout_s`)."""


class StreamReset(Exception):
    """The attempt whose tokens were being yielded was voided (its worker died, or its stream failed)
    and the job started over. Drop the text received so far; `job.tokens()` again yields the new
    attempt's tokens only."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(f"job {job_id} started over: {reason}")
        self.reason = reason


@asynccontextmanager
async def redis_answers_within(seconds: float) -> AsyncIterator[None]:
    """Bound a producer's Redis round trips: a caller gets RedisUnavailable, never a hang."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except (TimeoutError, RedisConnectionError, RedisTimeoutError) as error:
        raise RedisUnavailable(f"Redis did not answer within {seconds} s: {error or 'timed out'}") from error
