"""Fast unit tests run on fakeredis; anything that needs real Redis behaviour lives in integration/."""

from __future__ import annotations

from collections.abc import AsyncIterator

import fakeredis
import pytest
from arq.connections import ArqRedis

from arkq.envelope import deserialize, serialize


@pytest.fixture
async def fake_redis() -> AsyncIterator[ArqRedis]:
    fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    client = ArqRedis(
        connection_pool=fake.connection_pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name="arq:queue",
    )
    yield client
    await client.aclose()
