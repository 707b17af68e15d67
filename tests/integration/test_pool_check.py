"""The pool every arkq client uses lends a connection without redis-py's reading check when it can see
the connection is clean, and never lends one that is not: a reply left unread, or a connection the
server closed, goes through redis-py's own check and is replaced (`arkq.connection.ReadyCheckedPool`).
"""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from arkq.connection import (
    BlockingReadyCheckedPool,
    ReadyCheckedPool,
    connect,
    is_idle_and_clean,
)
from config_module.loader import load_config
from gateway.app import Gateway
from tests.waiting import until
from worker.settings import redis_pool


async def _lent(client: Redis) -> AbstractConnection:
    """The connection the client's next command will use (taken and given back)."""
    pool = client.connection_pool
    connection = await pool.get_connection()
    await pool.release(connection)
    return connection


async def test_every_arkq_client_uses_the_checked_pool(redis_url: str) -> None:
    config = load_config()
    producer_side, worker_side = connect(config, redis_url), redis_pool(config, redis_url)
    gateway = Gateway(config, redis_url)
    async with gateway.running():
        assert type(gateway.redis.connection_pool) is BlockingReadyCheckedPool
    for client in (producer_side, worker_side):
        assert type(client.connection_pool) is ReadyCheckedPool
        await client.aclose()


async def test_a_used_connection_is_seen_clean_on_this_redis_py(redis_url: str) -> None:
    """The fast path is taken with the installed redis-py and hiredis: if an upgrade moved what the
    check looks at, every connection would go through the slow check, and this says so."""
    client = connect(load_config(), redis_url)
    try:
        await client.set("k", "v")
        connection = await _lent(client)
        assert is_idle_and_clean(connection)
    finally:
        await client.aclose()


async def test_a_connection_with_an_unread_reply_is_not_lent_as_it_is(redis_url: str) -> None:
    client = connect(load_config(), redis_url)
    try:
        await client.set("k", "v")
        pool = client.connection_pool
        connection = await pool.get_connection()
        await connection.send_command("PING")  # its reply is never read
        await pool.release(connection)
        await until(lambda: not is_idle_and_clean(connection), 5, "the unread reply arrives")
        # The next command gets its own reply, not the PONG left behind.
        assert await client.get("k") == b"v"
        assert await client.incr("n") == 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("blocking", [False, True])
async def test_a_connection_the_server_closed_is_replaced(redis_url: str, blocking: bool) -> None:
    if blocking:  # the gateway's kind of pool
        client = Redis.from_pool(BlockingReadyCheckedPool.from_url(redis_url, max_connections=4))
    else:
        client = connect(load_config(), redis_url)
    try:
        await client.client_setname("doomed")
        connection = await _lent(client)
        killer = Redis.from_url(redis_url)
        await killer.client_kill_filter(skipme=True, _type="normal")
        await killer.aclose()
        await until(lambda: not is_idle_and_clean(connection), 5, "the close reaches the client")
        assert await client.ping()
        assert await client.client_getname() is None  # a new connection, not the killed one
    finally:
        await client.aclose()
