"""Shared fixtures. Redis is a real redis-server on a free port, one per test session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

from tests.servers import Process, start_redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, str]]:
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield process, url
    process.stop()


@pytest.fixture
def redis_url(redis_server: tuple[Process, str]) -> str:
    """A real Redis, emptied for each test."""
    url = redis_server[1]
    with redis.Redis.from_url(url) as client:
        client.flushall()
    return url


@pytest.fixture
async def aredis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()
