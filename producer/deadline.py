"""A producer's caller gets an answer in bounded time: RedisUnavailable, never a hang."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.errors import RedisUnavailable


@asynccontextmanager
async def redis_answers_within(seconds: float) -> AsyncIterator[None]:
    """Bound a producer's Redis round trips; Redis not answering in time is RedisUnavailable."""
    try:
        async with asyncio.timeout(seconds):
            yield
    except (TimeoutError, RedisConnectionError, RedisTimeoutError) as error:
        detail = str(error) or "timed out"
        raise RedisUnavailable(f"Redis did not answer within {seconds} s: {detail}") from error
