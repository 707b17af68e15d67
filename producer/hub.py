"""Live events for every reader of a producer over one Redis connection.

A gateway carries thousands of event streams at once, a web backend or an agent's link follows a job
for every call. One pub/sub connection per reader would cost Redis (and the process) a connection
each, and every call a connection's set-up; instead one subscribed connection carries every channel
that some reader of the producer follows, reads each message once, and hands the event to that
channel's readers, each of which takes all that waits for it in one go (one write, for a relay). The
first reader of a channel subscribes it, the last one to leave unsubscribes it.

Pub/sub is at-most-once, and the hub does not pretend otherwise: when its connection breaks (a Redis
restart, a dead peer found by its heartbeat), every reader is told, by the same `ConnectionError` a
reader's own connection would raise, and goes back to the job's replay log, as `read_event_batches` does
after any lost connection. The hub connects again and subscribes to every followed channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from arkq.backoff import REDIS_BACKOFF
from arkq.connection import Heartbeat
from arkq.contract import Event, parse_event

logger = logging.getLogger("arkq.gateway")

#: How long the dispatch loop listens before it looks at its subscriptions again.
LISTEN_S = 1.0
#: How early a quiet wait's timer may fire and still end the wait (uvloop rounds timers to the ms).
TIMER_SLACK_S = 0.001
#: Messages a slow reader may have waiting before it is sent back to the log instead.
READER_BACKLOG = 10_000


class Feed:
    """One reader's view of one channel: `next_event` as on a subscription of its own, and the events
    already `waiting`, so that a busy reader takes all of them in one go."""

    def __init__(self, hub: Hub, channel: bytes):
        self._hub = hub
        self.channel = channel
        # None in the line: the connection broke there, and what came after it may lack events.
        self._events: deque[Event | None] = deque()
        self._arrived = asyncio.Event()
        #: When the wait in progress gives up (loop time), and the timer that checks it. One timer
        #: serves many waits: a stream at a GPU's pace waits once a token, and a timer set and cancelled
        #: for each wait cost more than the wait.
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = False

    def deliver(self, event: Event | None) -> None:
        """Called by the hub: an event, or None for "the connection broke, something may be lost"."""
        if len(self._events) >= READER_BACKLOG:  # a reader this far behind catches up from the log
            self._events.clear()
            event = None
        self._events.append(event)
        self._arrived.set()

    async def next_event(self, timeout: float) -> Event | None:
        """The next event, None if none within `timeout`; RedisConnectionError if some may be lost."""
        if not self._events:
            loop = asyncio.get_running_loop()
            self._deadline = loop.time() + timeout
            if self._timer is None or self._timer.when() > self._deadline:  # none, or set for later
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(self._deadline, self._check_deadline)
            self._arrived.clear()
            self._waiting = True
            try:
                await self._arrived.wait()
            finally:
                self._waiting = False
            if not self._events:
                return None
        event = self._events.popleft()
        if event is None:
            raise RedisConnectionError("the gateway's live-event connection was lost; reading the log")
        return event

    def _check_deadline(self) -> None:
        """The timer: wake a wait that has reached its deadline, or look again at a later one (the
        wait it was set for ended, and another began since)."""
        self._timer = None
        if not self._waiting:
            return  # set again by the next wait
        loop = asyncio.get_running_loop()
        if loop.time() + TIMER_SLACK_S >= self._deadline:  # uvloop fires up to a millisecond early
            self._arrived.set()
        else:
            self._timer = loop.call_at(self._deadline, self._check_deadline)

    def waiting(self) -> list[Event]:
        """The events that have arrived, up to a break in the connection (which `next_event` raises)."""
        taken: list[Event] = []
        while self._events and (event := self._events[0]) is not None:
            taken.append(event)
            self._events.popleft()
        return taken

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        await self._hub.leave(self)


class Hub:
    """A producer's shared subscription. `await hub.follow(channel)` gives a `Feed`."""

    def __init__(self, redis: Redis, *, dead_after_s: float, connect_wait_s: float):
        self._redis = redis
        self._dead_after_s = dead_after_s
        self._connect_wait_s = connect_wait_s
        self._feeds: dict[bytes, set[Feed]] = {}
        self._heartbeat: Heartbeat | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def channels(self) -> int:
        return len(self._feeds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="arkq-events-hub")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        # Cancelled again until it ends: a cancel that lands as a message arrives can be lost inside a
        # client's own timeout handling (asyncio.wait_for on Python 3.11), and the loop would go on.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.1)
        with contextlib.suppress(asyncio.CancelledError):
            task.result()

    async def follow(self, channel: str) -> Feed:
        """A feed of `channel`'s messages from now on (subscribing it if no local reader follows it).

        A reader subscribes before it reads the log: so the first reader of a channel waits, up to
        `connect_wait_s`, for the hub's connection (just opened, or coming back) and subscribes on it.
        Past that wait, the hub subscribes it on connecting, and the reader's quiet checks of the log
        carry it meanwhile."""
        key = channel.encode()
        feed = Feed(self, key)
        readers = self._feeds.setdefault(key, set())
        readers.add(feed)
        if len(readers) == 1:
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._connect_wait_s):
                        await self._connected.wait()
                if self._heartbeat is not None and self._connected.is_set():
                    # On failure, the dispatch loop finds the connection broken and subscribes it again.
                    with contextlib.suppress(RedisError):
                        await self._heartbeat.pubsub.subscribe(key)
            except BaseException:  # the reader went away meanwhile (cancelled): its feed goes with it
                self._forget(feed)
                raise
        return feed

    def _forget(self, feed: Feed) -> bool:
        """Take `feed` out; whether it was its channel's last reader."""
        readers = self._feeds.get(feed.channel)
        if readers is None:
            return False
        readers.discard(feed)
        if readers:
            return False
        del self._feeds[feed.channel]
        return True

    async def leave(self, feed: Feed) -> None:
        last = self._forget(feed)
        if last and self._heartbeat is not None and self._connected.is_set():
            with contextlib.suppress(RedisError):
                await self._heartbeat.pubsub.unsubscribe(feed.channel)

    async def _run(self) -> None:
        failures = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                # A channel of its own keeps the connection subscribed while no reader follows any job.
                channels = {b"ark:hub", *self._feeds}
                await pubsub.subscribe(*channels)
                self._heartbeat = Heartbeat(pubsub, self._dead_after_s)
                self._connected.set()
                # Readers that came, or left, while SUBSCRIBE was on its way found the hub not connected.
                arrived = self._feeds.keys() - channels
                if arrived:
                    await pubsub.subscribe(*arrived)
                gone = channels - self._feeds.keys() - {b"ark:hub"}  # their last readers left meanwhile
                if gone:
                    await pubsub.unsubscribe(*gone)
                failures = 0
                while True:
                    message = await self._heartbeat.get_message(timeout=LISTEN_S)
                    if message is not None and message.get("type") == "message":
                        self._dispatch(message["channel"], message["data"])
                    for channel, data in await self._heartbeat.arrived():
                        self._dispatch(channel, data)
            except RedisError as error:
                self._connected.clear()
                self._heartbeat = None
                for readers in tuple(self._feeds.values()):
                    for feed in tuple(readers):
                        feed.deliver(None)
                delay = REDIS_BACKOFF.delay(failures)
                failures += 1
                logger.warning("live-event connection lost (%s); subscribing again in %.2f s", error, delay)
                await asyncio.sleep(delay)
            finally:
                with contextlib.suppress(RedisError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        """One published event to every local reader of its channel, read once for all of them."""
        feeds = self._feeds.get(channel)
        if not feeds:
            return
        try:
            event = parse_event(data)
        except ValueError as error:  # its readers find the gap and read the job's log instead
            logger.warning("unreadable event on %r: %s", channel, error)
            return
        for feed in tuple(feeds):
            feed.deliver(event)
