"""Deployment fixtures (the helpers are in tests/deploy/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from producer import Producer


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[Producer]:
    """A producer on the test's Redis (the `redis_url` fixture: a real redis-server, emptied per test)."""
    async with Producer(redis_url) as opened:
        yield opened
