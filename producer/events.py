"""Reading a job's events completely and in order, whenever the reader arrives.

Pub/sub is at-most-once: whatever was published before SUBSCRIBE, or while the connection was down, is
gone. So the reader subscribes first, then reads the replay log from the next `seq` it needs, and uses
live messages only while they arrive in sequence. Any gap, duplicate or quiet spell sends it back to
the log, which holds every event before any live one (the worker appends before it publishes).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.backoff import Outage
from arkq.connection import reply
from arkq.contract import TERMINAL_EVENT_TYPES, Event, parse_event
from arkq.errors import JobLost
from arkq.keys import event_channel, event_log_key

#: How long the reader waits on the channel before it checks the log anyway.
QUIET_CHECK_S = 1.0


async def read_events(
    redis: Redis,
    job_id: str,
    *,
    channel_prefix: str,
    is_pending: Callable[[], Awaitable[bool]],
    from_seq: int = 0,
    quiet_check_s: float = QUIET_CHECK_S,
    retry_s: float = 30.0,
) -> AsyncGenerator[Event, None]:
    """Every event of the job from `from_seq`, each once, ending after the terminal one.

    When the channel has been quiet, `is_pending` (queued or running?) decides whether to keep waiting:
    a job that is neither, with no terminal event in its log, raises JobLost instead of a hang."""
    log_key = event_log_key(job_id)
    channel = event_channel(channel_prefix, job_id)
    next_seq = from_seq
    pubsub = redis.pubsub()
    outage = Outage(retry_s)
    try:
        await pubsub.subscribe(channel)
        quiet = False
        while True:
            try:
                # Pending is asked before the log is read: a job that ends in between has its
                # terminal event in the log by then (the worker publishes it before arq lets go).
                pending = await is_pending() if quiet else True
                backlog = await reply(redis.lrange(log_key, next_seq, -1))
                outage.over()
                for raw in backlog:
                    event = parse_event(raw)
                    next_seq = event.seq + 1
                    yield event
                    if event.type in TERMINAL_EVENT_TYPES:
                        return
                if not pending and not backlog:
                    raise JobLost(
                        job_id, f"job {job_id!r} is not queued or running and its events ended without an end"
                    )
                quiet = False
                # Follow the live channel until something is out of order or it goes quiet.
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=quiet_check_s)
                    if message is None:
                        quiet = True
                        break
                    event = parse_event(message["data"])
                    if event.seq < next_seq:
                        continue
                    if event.seq > next_seq:
                        break
                    next_seq += 1
                    yield event
                    if event.type in TERMINAL_EVENT_TYPES:
                        return
            except (RedisConnectionError, RedisTimeoutError) as error:
                # Redis went away (a restart, a failover): wait, subscribe again, and catch up from the
                # log, which kept whatever was published meanwhile.
                await outage.wait(error)
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
                pubsub = redis.pubsub()
                await pubsub.subscribe(channel)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # as above
