"""A producer's caller gets an answer in bounded time, and a failure it can name: never a hang, never
a bare redis-py exception."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq.connection import redis_address
from arkq.redis_failures import name_failure

#: How long dropping the idle connections of a silent Redis may take (closing sends, never waits).
DROP_IDLE_S = 1.0


@asynccontextmanager
async def redis_answers_within(
    redis: Redis, seconds: float, *, enqueueing: str | None = None
) -> AsyncIterator[None]:
    """Bound a producer's Redis round trips on `redis`. Any failure, Redis not answering in time
    included, is the `RedisFailure` that names it (`arkq.redis_failures`).

    No answer in time also drops the client's idle pooled connections: they went the same way as the
    one that went silent (a partition, a NAT that forgot them), and each would cost the next caller the
    whole wait again; fresh ones are opened as needed. One failure per outage, not one per connection.

    `enqueueing` is the ID of the job being enqueued: the error carries it (`job_id`), and one that may
    have reached Redis says that the job may have been queued and can be enqueued again with that ID."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError as error:
        await _drop_idle_connections(redis)
        unanswered = TimeoutError(f"no answer from {redis_address(redis)} within {seconds} s")
        raise name_failure(unanswered, job_id=enqueueing) from error
    except (RedisError, OSError) as error:
        raise name_failure(error, job_id=enqueueing) from error


async def _drop_idle_connections(redis: Redis) -> None:
    with suppress(RedisError, OSError, TimeoutError):
        async with asyncio.timeout(DROP_IDLE_S):
            await redis.connection_pool.disconnect(inuse_connections=False)
