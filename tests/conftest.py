"""Shared fixtures, and the `integration` marker.

Run the fast tests only (in-process: fakeredis, in-process servers; well under a minute) with

    .venv/bin/pytest -m "not integration"

and everything, as CI does, with plain `.venv/bin/pytest`. A test is `integration` when it starts real
processes: redis-server, `arkq fake-llm`, `arq worker.WorkerSettings`, docker compose, hadolint, pip,
`arkq ...` commands. Everything under tests/integration and tests/deploy is marked here, and so is any
test that asks for the real Redis below (`redis_server`, `redis_url`, `aredis`); a test elsewhere that
starts a process says so itself with `pytestmark = pytest.mark.integration`.

Redis is a real redis-server on a free port, one per test session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from tests.servers import Process, start_redis

TESTS = Path(__file__).resolve().parent
#: Folders of tests/ whose every test starts processes.
INTEGRATION_DIRS = frozenset({"integration", "deploy"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.path.resolve()
        folder = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else ""
        if folder in INTEGRATION_DIRS or "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.integration)


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
