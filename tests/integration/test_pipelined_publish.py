"""Pipelined publish calls against a real Redis: a lost connection loses no event and doubles none."""

import asyncio
from typing import Any

import hiredis
import pytest
import redis.asyncio
import uvloop
from redis._parsers.hiredis import NOT_ENOUGH_DATA

from arkq.connection import connect, hiredis_reader
from arkq.contract import TokenEvent, parse_event
from arkq.keys import event_log_key, lease_key
from arkq.lease import Lease
from config_module.settings import ArkConfig
from worker.publisher import EventPublisher, EventWriter


async def test_calls_out_when_their_connection_is_killed_are_sent_again_and_written_once(
    redis_url: str,
) -> None:
    client = connect(ArkConfig.model_validate({"redis": {"url": redis_url}}))
    admin = redis.asyncio.Redis.from_url(redis_url)
    jobs = [f"job-{n}" for n in range(20)]
    for job in jobs:
        await admin.set(lease_key(job), "attempt-1")
    publishers = [
        EventPublisher.open(client, Lease(job, "attempt-1"), channel_prefix="ark:tokens:", log_ttl_s=60)
        for job in jobs
    ]
    calls = EventWriter.of(client)._calls
    writes = 0
    write = calls._write

    def counted(call: Any) -> None:
        nonlocal writes
        writes += 1
        write(call)

    calls._write = counted  # type: ignore[method-assign]  # this test's own writer
    made = 0
    make = calls.call

    def made_counted(*args: Any) -> None:
        nonlocal made
        made += 1
        make(*args)

    calls.call = made_counted  # type: ignore[method-assign]
    try:
        for step in range(200):
            for pub in publishers:
                await pub.emit_text("token", f"{pub.job_id}:{step} ")
            await asyncio.sleep(0)  # the writer's pass: calls go out
            if step % 10 == 5 and calls._writable and calls._sent:
                # The writer's connection goes, with the replies of the calls that are out.
                await admin.client_kill_filter(_type="normal", skipme=True)
        for pub in publishers:
            await asyncio.wait_for(pub.flush(), 30)
        assert writes > made, "calls that were out when their connection went were sent again"
        for job in jobs:
            logged = [parse_event(raw) for raw in await admin.lrange(event_log_key(job), 0, -1)]
            assert all(isinstance(event, TokenEvent) for event in logged)
            assert [(event.seq, event.text) for event in logged] == [  # type: ignore[union-attr]
                (step, f"{job}:{step} ") for step in range(200)
            ]
    finally:
        await client.aclose()
        await admin.aclose()


async def test_the_redis_py_internals_it_writes_and_reads_through(redis_url: str) -> None:
    """What `PipelinedCalls` relies on beyond redis-py's public methods: a connected connection's
    stream writer, which takes bytes (packed by hiredis) without a wait, and hiredis's reader of
    replies already read,
    which answers redis-py's NOT_ENOUGH_DATA when it holds no whole reply."""
    client = connect(ArkConfig.model_validate({"redis": {"url": redis_url}}))
    try:
        connection = await client.connection_pool.get_connection()
        assert isinstance(connection._writer, asyncio.StreamWriter)
        connection._writer.writelines([hiredis.pack_command(("EVAL", f"return {{{n}}}", 0)) for n in (1, 2)])
        assert await connection.read_response(disable_decoding=True) == [1]
        parser = hiredis_reader(connection)
        assert parser is not None
        second = parser.gets(False)
        if second is NOT_ENOUGH_DATA:  # not in the same read: it comes through the connection
            second = await connection.read_response(disable_decoding=True)
        assert second == [2]
        assert parser.gets(False) is NOT_ENOUGH_DATA
        await client.connection_pool.release(connection)
    finally:
        await client.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_closed_while_idle_is_replaced_at_the_next_call(redis_url: str, loop: str) -> None:
    """A reset (TCP keepalive giving up on a dead peer, a proxy's RST) closes the writer's socket while
    no call is out and nobody reads. The next call finds it closed (uvloop refuses the write, asyncio
    drops it), connects again and is written: no job fails for it. On the worker's loop, uvloop, too."""

    async def main() -> list[int]:
        client = connect(ArkConfig.model_validate({"redis": {"url": redis_url}}))
        try:
            lengths = []
            for job in ("before", "after", "later"):
                await client.set(lease_key(job), "attempt-1")
                pub = EventPublisher.open(
                    client, Lease(job, "attempt-1"), channel_prefix="ark:t:", log_ttl_s=60
                )
                await asyncio.wait_for(pub.publish(TokenEvent, text="a"), 10)
                lengths.append(await client.llen(event_log_key(job)))
                connection = EventWriter.of(client)._calls._connection
                assert connection is not None and connection._writer is not None
                connection._writer.transport.abort()  # as the event loop does on a reset
                await asyncio.sleep(0.05)
            return lengths
        finally:
            await client.aclose()

    lengths = uvloop.run(main()) if loop == "uvloop" else asyncio.run(main())
    assert lengths == [1, 1, 1]
