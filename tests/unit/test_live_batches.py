"""A relay takes a job's events in batches: what the log holds, then the live events waiting together;
a gap or a broken connection still sends the reader back to the log."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from arq.connections import ArqRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from arkq.contract import DoneEvent, Event, TokenEvent, encode_event
from arkq.keys import event_log_key
from producer import hub as hub_module
from producer.events import LiveFeed, read_event_batches
from producer.hub import Feed, Hub

PREFIX = "ark:tokens:"


def token(seq: int) -> TokenEvent:
    return TokenEvent(job_id="j", seq=seq, text=f"t{seq}")


def done(seq: int) -> DoneEvent:
    return DoneEvent(job_id="j", seq=seq, text="", finish_reason="stop", usage={})


class Scripted:
    """A live feed that hands out prepared deliveries: each one's first event, the rest as waiting."""

    def __init__(self, deliveries: list[list[Event]], before: Callable[[], Awaitable[object]] | None = None):
        self._deliveries = deliveries
        self._before = before
        self._waiting: list[Event] = []
        self.closed = False

    async def next_event(self, timeout: float) -> Event | None:
        if not self._deliveries:
            return None
        if self._before is not None:
            await self._before()
        first, *self._waiting = self._deliveries.pop(0)
        return first

    def waiting(self) -> list[Event]:
        taken, self._waiting = self._waiting, []
        return taken

    async def aclose(self) -> None:
        self.closed = True


async def batches_of(redis: ArqRedis, feed: Scripted) -> list[list[int]]:
    async def follow(channel: str) -> LiveFeed:
        return feed

    async def pending() -> bool:
        return True

    reader = read_event_batches(
        redis, "j", channel_prefix=PREFIX, is_pending=pending, quiet_check_s=0.01, follow=follow
    )
    return [[event.seq for event in batch] async for batch in reader]


async def log(redis: ArqRedis, *events: Event) -> None:
    await redis.rpush(event_log_key("j"), *(encode_event(event) for event in events))


async def test_the_log_then_the_waiting_live_events_each_come_as_one_batch(fake_redis: ArqRedis) -> None:
    await log(fake_redis, token(0), token(1))
    feed = Scripted([[token(2), token(3), token(4)], [token(5), done(6)]])
    assert await batches_of(fake_redis, feed) == [[0, 1], [2, 3, 4], [5, 6]]
    assert feed.closed


async def test_a_gap_among_the_waiting_events_goes_back_to_the_log(fake_redis: ArqRedis) -> None:
    await log(fake_redis, token(0), token(1))
    # The worker appends before it publishes: the log has every event; live, 4 was lost.
    the_rest = (token(2), token(3), token(4), token(5), done(6))
    feed = Scripted(
        [[token(1), token(2), token(3), token(5), done(6)]], before=lambda: log(fake_redis, *the_rest)
    )
    assert await batches_of(fake_redis, feed) == [[0, 1], [2, 3], [4, 5, 6]]


async def test_a_feed_hands_out_what_waits_up_to_a_broken_connection(fake_redis: ArqRedis) -> None:
    feed = Feed(Hub(fake_redis, dead_after_s=5, connect_wait_s=1), b"ark:tokens:j")
    for event in (token(0), token(1), token(2), None, token(3)):
        feed.deliver(event)
    assert await feed.next_event(timeout=1) == token(0)
    assert feed.waiting() == [token(1), token(2)]
    assert feed.waiting() == []  # the break stays in line
    with pytest.raises(RedisConnectionError):
        await feed.next_event(timeout=1)
    assert await feed.next_event(timeout=1) == token(3)
    assert await feed.next_event(timeout=0.01) is None


async def test_a_reader_too_far_behind_is_sent_back_to_the_log(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "READER_BACKLOG", 3)
    feed = Feed(Hub(fake_redis, dead_after_s=5, connect_wait_s=1), b"ark:tokens:j")
    for seq in range(4):
        feed.deliver(token(seq))
    assert feed.waiting() == []
    with pytest.raises(RedisConnectionError):
        await feed.next_event(timeout=1)


async def test_a_reader_that_goes_away_while_the_hub_connects_leaves_no_feed_behind(
    fake_redis: ArqRedis,
) -> None:
    hub = Hub(fake_redis, dead_after_s=5, connect_wait_s=30)  # never started: never connected
    following = asyncio.create_task(hub.follow("ark:tokens:j"))
    await asyncio.sleep(0.05)
    assert hub.channels == 1  # waiting for the connection
    following.cancel()
    with pytest.raises(asyncio.CancelledError):
        await following
    assert hub.channels == 0
