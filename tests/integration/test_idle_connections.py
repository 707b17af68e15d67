"""A producer that gives up on a silent Redis drops its client's idle pooled connections: callers that
are using the same client at that moment must not be hurt by it (a gateway serves hundreds of readers
on one pool, and a timeout on one of them dropped connections from under the others)."""

from __future__ import annotations

import asyncio

from redis.asyncio import BlockingConnectionPool, Redis

from producer.deadline import _drop_idle_connections


async def test_dropping_idle_connections_never_breaks_a_command_in_flight(redis_url: str) -> None:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=6, timeout=5)
    redis = Redis(connection_pool=pool)
    failures: list[str] = []
    commands = 0
    stop = asyncio.Event()

    async def caller() -> None:
        nonlocal commands
        while not stop.is_set():
            await asyncio.sleep(0)  # the connection goes back to the pool: idle, between two commands
            try:
                await redis.get("key")
                commands += 1
            except Exception as error:  # anything at all is the failure this test looks for
                failures.append(repr(error))

    callers = [asyncio.create_task(caller()) for _ in range(20)]
    try:
        for _ in range(300):
            await asyncio.sleep(0.001)
            await _drop_idle_connections(redis)
    finally:
        stop.set()
        await asyncio.gather(*callers)
        await redis.aclose()
    assert failures == [], f"{len(failures)} of {commands + len(failures)} commands failed: {set(failures)}"
    assert commands > 1000
