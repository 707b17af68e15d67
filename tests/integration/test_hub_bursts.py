"""The shared subscription (`producer.hub`) against a real Redis: a burst of messages (a decode step of
many streams) is taken off the parser at once, every message still reaches its readers in order, and
subscribing and leaving while messages flow keep working; a reader's quiet wait still ends on time
although one timer serves many waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from arkq.connection import Heartbeat, connect
from arkq.contract import TokenEvent, encode_event
from config_module.loader import load_config
from producer.hub import Feed, Hub


def _event(job: str, seq: int) -> bytes:
    return encode_event(TokenEvent(job_id=job, seq=seq, text=f"{job}-{seq}"))


async def _drain(feed: Feed, count: int) -> list[int]:
    seqs: list[int] = []
    while len(seqs) < count:
        event = await feed.next_event(timeout=5)
        assert event is not None, f"{feed.channel!r}: quiet after {len(seqs)} of {count}"
        seqs.append(event.seq)
        seqs += [waiting.seq for waiting in feed.waiting()]
    return seqs


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[Hub]:
    client = connect(load_config(), redis_url)
    hub = Hub(client, dead_after_s=10, connect_wait_s=5)
    hub.start()
    yield hub
    await hub.aclose()
    await client.aclose()


async def test_a_burst_reaches_every_reader_in_order_and_is_read_in_bulk(
    hub: Hub, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    real_get_message = Heartbeat.get_message

    async def counted(self: Heartbeat, timeout: float) -> object:
        nonlocal reads
        reads += 1
        return await real_get_message(self, timeout)

    monkeypatch.setattr(Heartbeat, "get_message", counted)
    jobs, per_job = [f"job{i}" for i in range(8)], 200
    feeds = [await hub.follow(f"ch:{job}") for job in jobs]
    publisher = Redis.from_url(redis_url)
    try:
        readers = [asyncio.create_task(_drain(feed, per_job)) for feed in feeds]
        # One pipeline: the messages leave Redis together, as a decode step's do from a worker.
        async with publisher.pipeline(transaction=False) as pipe:
            for seq in range(per_job):
                for job in jobs:
                    pipe.publish(f"ch:{job}", _event(job, seq))
            await pipe.execute()
        results = await asyncio.wait_for(asyncio.gather(*readers), 10)
    finally:
        await publisher.aclose()
        for feed in feeds:
            await feed.aclose()
    assert all(seqs == list(range(per_job)) for seqs in results)
    total = len(jobs) * per_job
    assert reads < total / 4, f"{reads} reads for {total} messages: they came one by one"


async def test_following_and_leaving_while_a_burst_flows(hub: Hub, redis_url: str) -> None:
    publisher = Redis.from_url(redis_url)
    busy = await hub.follow("ch:busy")
    stop = asyncio.Event()

    async def flood() -> int:
        sent = 0
        while not stop.is_set():
            async with publisher.pipeline(transaction=False) as pipe:
                for _ in range(50):
                    pipe.publish("ch:busy", _event("busy", sent))
                    sent += 1
                await pipe.execute()
            await asyncio.sleep(0)
        return sent

    flooding = asyncio.create_task(flood())
    try:
        for round_ in range(20):
            # Subscription confirmations arrive between the flood's messages and are handled as such.
            late = await hub.follow(f"ch:late{round_}")
            await publisher.publish(f"ch:late{round_}", _event(f"late{round_}", 0))
            event = await late.next_event(timeout=5)
            assert event is not None and event.text == f"late{round_}-0"
            await late.aclose()
    finally:
        stop.set()
        sent = await flooding
        await publisher.aclose()
    seqs = await _drain(busy, sent)
    await busy.aclose()
    assert seqs == list(range(sent))
    assert hub.channels == 0


async def test_a_quiet_wait_ends_on_time_after_many_waits_that_did_not(hub: Hub, redis_url: str) -> None:
    feed = await hub.follow("ch:quiet")
    publisher = Redis.from_url(redis_url)
    try:
        for seq in range(50):  # waits that an event ends, each leaving the one timer behind
            waiting = asyncio.create_task(feed.next_event(timeout=10))
            await asyncio.sleep(0)
            await publisher.publish("ch:quiet", _event("quiet", seq))
            assert (await asyncio.wait_for(waiting, 5)) is not None
        began = time.monotonic()
        assert await feed.next_event(timeout=0.2) is None
        waited = time.monotonic() - began
        assert 0.2 <= waited < 2, f"a 0.2 s wait took {waited:.2f} s"  # not the 10 s left on the timer
    finally:
        await publisher.aclose()
        await feed.aclose()
