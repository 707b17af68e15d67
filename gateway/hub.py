"""Live events for every reader in the process over one Redis connection.

A gateway carries thousands of event streams at once. One pub/sub connection per reader would cost
Redis (and the process) a connection each; instead one subscribed connection carries every channel
that some local reader follows, and dispatches each message to that channel's readers. The first
reader of a channel subscribes it, the last one to leave unsubscribes it.

Pub/sub is at-most-once, and the hub does not pretend otherwise: when its connection breaks (a Redis
restart, a dead peer found by its heartbeat), every reader is told, by the same `ConnectionError` a
reader's own connection would raise, and goes back to the job's replay log, as `read_events` does
after any lost connection. The hub connects again and subscribes to every followed channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from arkq.backoff import REDIS_BACKOFF
from arkq.connection import Heartbeat

logger = logging.getLogger("arkq.gateway")

#: How long the dispatch loop listens before it looks at its subscriptions again.
LISTEN_S = 1.0
#: Messages a slow reader may have waiting before it is sent back to the log instead.
READER_BACKLOG = 10_000


class Feed:
    """One reader's view of one channel: `get_message` as on a pub/sub connection of its own."""

    def __init__(self, hub: Hub, channel: bytes):
        self._hub = hub
        self.channel = channel
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(READER_BACKLOG)

    def deliver(self, message: dict[str, Any] | None) -> None:
        """Called by the hub: a message, or None for "the connection broke, something may be lost"."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:  # a reader this far behind catches up from the log instead
            self._queue = asyncio.Queue(READER_BACKLOG)
            self._queue.put_nowait(None)

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next message, None if none within `timeout`; RedisConnectionError if some may be lost."""
        try:
            message = self._queue.get_nowait()  # a busy stream: no timer for each message
        except asyncio.QueueEmpty:
            try:
                message = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                return None
        if message is None:
            raise RedisConnectionError("the gateway's live-event connection was lost; reading the log")
        return message

    async def aclose(self) -> None:
        await self._hub.leave(self)


class Hub:
    """The process's shared subscription. `await hub.follow(channel)` gives a `Feed`."""

    def __init__(self, redis: Redis, *, dead_after_s: float):
        self._redis = redis
        self._dead_after_s = dead_after_s
        self._feeds: dict[bytes, set[Feed]] = {}
        self._heartbeat: Heartbeat | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def channels(self) -> int:
        return len(self._feeds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="arkq-gateway-hub")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def follow(self, channel: str) -> Feed:
        """A feed of `channel`'s messages from now on (subscribing it if no local reader follows it)."""
        key = channel.encode()
        feed = Feed(self, key)
        readers = self._feeds.setdefault(key, set())
        readers.add(feed)
        if len(readers) == 1 and self._heartbeat is not None and self._connected.is_set():
            # On failure, the dispatch loop finds the connection broken, and subscribes it on reconnecting.
            with contextlib.suppress(RedisError):
                await self._heartbeat.pubsub.subscribe(key)
        return feed

    async def leave(self, feed: Feed) -> None:
        readers = self._feeds.get(feed.channel)
        if readers is None:
            return
        readers.discard(feed)
        if not readers:
            del self._feeds[feed.channel]
            if self._heartbeat is not None and self._connected.is_set():
                with contextlib.suppress(RedisError):
                    await self._heartbeat.pubsub.unsubscribe(feed.channel)

    async def _run(self) -> None:
        failures = 0
        while True:
            pubsub = self._redis.pubsub()
            try:
                # A channel of its own keeps the connection subscribed while no reader follows any job.
                await pubsub.subscribe(b"ark:gateway:hub", *self._feeds)
                self._heartbeat = Heartbeat(pubsub, self._dead_after_s)
                self._connected.set()
                failures = 0
                while True:
                    message = await self._heartbeat.get_message(timeout=LISTEN_S)
                    if message is not None and message.get("type") == "message":
                        for feed in tuple(self._feeds.get(message["channel"], ())):
                            feed.deliver(message)
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
