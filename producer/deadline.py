"""A producer's caller gets an answer in bounded time, and a failure it can name: never a hang, never
a bare redis-py exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from arkq.redis_failures import name_failure


@asynccontextmanager
async def redis_answers_within(seconds: float, *, enqueueing: str | None = None) -> AsyncIterator[None]:
    """Bound a producer's Redis round trips. Any failure, Redis not answering in time included, is
    the `RedisFailure` that names it (`arkq.redis_failures`).

    `enqueueing` is the ID of the job being enqueued: the error carries it (`job_id`), and one that may
    have reached Redis says that the job may have been queued and can be enqueued again with that ID."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as error:
        raise name_failure(TimeoutError(f"no answer within {seconds} s"), job_id=enqueueing) from error
    except (RedisError, OSError) as error:
        raise name_failure(error, job_id=enqueueing) from error
