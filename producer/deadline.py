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
    """Close the pool's idle connections, each at once (no wait for the close to complete).

    Not redis-py's `pool.disconnect(inuse_connections=False)`: it closes them concurrently and waits
    for each, so a caller that takes one from the pool meanwhile sends on a connection being closed
    under it (`Connection lost`, or an AttributeError on its writer). Closed here without awaiting
    anything, none can be taken half-closed; the next caller to take one reconnects it."""
    pool = redis.connection_pool
    for connection in list(pool._available_connections):
        with suppress(RedisError, OSError):
            await connection.disconnect(nowait=True)  # returns without suspending
