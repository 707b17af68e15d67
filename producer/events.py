"""Reading a job's events completely and in order, whenever the reader arrives.

Pub/sub is at-most-once: whatever was published before SUBSCRIBE, or while the connection was down, is
gone. So the reader subscribes first, then reads the replay log from the next `seq` it needs, and uses
live messages only while they arrive in sequence. Any gap, duplicate or quiet spell sends it back to
the log, which holds every event before any live one (the worker appends before it publishes).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.backoff import Outage
from arkq.connection import Heartbeat, dead_after_s_of, reply
from arkq.contract import TERMINAL_EVENT_TYPES, Event, parse_event
from arkq.errors import JobLost
from arkq.keys import event_channel, event_log_key

#: How long the reader waits on the channel before it checks the log anyway.
QUIET_CHECK_S = 1.0


class LiveFeed(Protocol):
    """A job's live channel as a reader sees it: its events as published, None when none came in time,
    and redis-py's ConnectionError or TimeoutError when some may have been lost (the reader then goes
    back to the log)."""

    async def next_event(self, timeout: float) -> Event | None: ...

    def waiting(self) -> list[Event]:
        """The events that have already arrived, taken without waiting; none if the feed cannot tell
        cheaply. A reader that relays events (an HTTP stream) sends them in one write."""
        ...

    async def aclose(self) -> None: ...


#: Opens a `LiveFeed` on a channel: by default a subscription of the reader's own; a process with many
#: readers shares one (`producer.hub`: the jobs of one `Producer` share its).
Follow = Callable[[str], Awaitable[LiveFeed]]


class OwnSubscription:
    """A reader's own pub/sub connection, watched by a heartbeat (`arkq.connection.Heartbeat`)."""

    def __init__(self, redis: Redis, dead_after_s: float):
        self._heartbeat = Heartbeat(redis.pubsub(), dead_after_s)

    @classmethod
    def opener(cls, redis: Redis, dead_after_s: float) -> Follow:
        async def follow(channel: str) -> LiveFeed:
            feed = cls(redis, dead_after_s)
            try:
                await feed._heartbeat.pubsub.subscribe(channel)
            except BaseException:
                await feed.aclose()
                raise
            return feed

        return follow

    async def next_event(self, timeout: float) -> Event | None:
        message = await self._heartbeat.get_message(timeout=timeout)
        return None if message is None else parse_event(message["data"])

    def waiting(self) -> list[Event]:
        return []  # redis-py shows no buffered message without a read; each comes on its own

    async def aclose(self) -> None:
        await _close(self._heartbeat.pubsub)


async def read_event_batches(
    redis: Redis,
    job_id: str,
    *,
    channel_prefix: str,
    is_pending: Callable[[], Awaitable[bool]],
    from_seq: int = 0,
    quiet_check_s: float = QUIET_CHECK_S,
    retry_s: float = 30.0,
    dead_after_s: float | None = None,
    follow: Follow | None = None,
) -> AsyncGenerator[list[Event], None]:
    """Every event of the job from `from_seq`, each once, in order, ending after the terminal one; in
    batches of what is at hand together (a read of the log, or the live messages already waiting), so
    that a relay writes each batch at once. A batch is never empty.

    When the channel has been quiet, `is_pending` (queued or running?) decides whether to keep waiting:
    a job that is neither, with no terminal event in its log, raises JobLost instead of a hang.

    Redis going away is a pause: closed connections, and connections it stopped answering without
    closing them (found within `dead_after_s`, by default the client's own: a read timeout, or the live
    channel's unanswered heartbeat), are replaced, and the log fills in what was missed. After
    `retry_s` seconds of failures in a row the last one is raised.

    `follow` opens the live channel (default: a subscription of the reader's own)."""
    log_key = event_log_key(job_id)
    channel = event_channel(channel_prefix, job_id)
    dead_after = dead_after_s_of(redis) if dead_after_s is None else dead_after_s
    if follow is None:
        follow = OwnSubscription.opener(redis, dead_after)
    next_seq = from_seq
    outage = Outage(retry_s)
    live: LiveFeed | None = None
    try:
        quiet = False
        while True:
            try:
                if live is None:
                    live = await follow(channel)
                # Pending is asked before the log is read: a job that ends in between has its
                # terminal event in the log by then (the worker publishes it before arq lets go).
                pending = await is_pending() if quiet else True
                backlog = await reply(redis.lrange(log_key, next_seq, -1))
                outage.over()
                if backlog:
                    batch = _until_terminal([parse_event(raw) for raw in backlog])
                    next_seq = batch[-1].seq + 1
                    yield batch
                    if batch[-1].type in TERMINAL_EVENT_TYPES:
                        return
                elif not pending:
                    raise JobLost(
                        job_id, f"job {job_id!r} is not queued or running and its events ended without an end"
                    )
                quiet = False
                # Follow the live channel until something is out of order or it goes quiet.
                in_order = True
                while in_order:
                    first = await live.next_event(timeout=quiet_check_s)
                    if first is None:
                        quiet = True
                        break
                    batch = []
                    for event in (first, *live.waiting()):
                        if event.seq < next_seq:
                            continue
                        if event.seq > next_seq:
                            in_order = False  # a gap: the log has what is missing, and what follows
                            break
                        next_seq += 1
                        batch.append(event)
                        if event.type in TERMINAL_EVENT_TYPES:
                            break
                    if batch:
                        yield batch
                        if batch[-1].type in TERMINAL_EVENT_TYPES:
                            return
            except (RedisConnectionError, RedisTimeoutError) as error:
                # Redis went away (a restart, a failover, a dead peer): drop the subscription, wait,
                # subscribe again and catch up from the log, which kept whatever was published meanwhile.
                if live is not None:
                    await live.aclose()
                    live = None
                await outage.wait(error)
    finally:
        if live is not None:
            await live.aclose()


def _until_terminal(events: list[Event]) -> list[Event]:
    """The events up to and including the first terminal one (a log holds nothing after it)."""
    for index, event in enumerate(events):
        if event.type in TERMINAL_EVENT_TYPES:
            return events[: index + 1]
    return events


async def _close(pubsub: PubSub) -> None:
    with suppress(RedisError):  # closing a connection to a Redis that does not answer may time out
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
