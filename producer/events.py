"""Reading a job's events completely and in order, whenever the reader arrives.

Pub/sub is at-most-once: whatever was published before SUBSCRIBE, or while the connection was down, is
gone. So the reader subscribes first, then reads the replay log from the next `seq` it needs, and uses
live messages only while they arrive in sequence. Any gap, duplicate or quiet spell sends it back to
the log, which holds every event before any live one (the worker appends before it publishes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from redis.asyncio import Redis

from arkq.contract import TERMINAL_EVENT_TYPES, Event, channel_name, event_log_key, parse_event

#: How long the reader waits on the channel before it checks the log anyway.
QUIET_CHECK_S = 1.0


async def read_events(
    redis: Redis, job_id: str, *, channel_prefix: str, quiet_check_s: float = QUIET_CHECK_S
) -> AsyncIterator[Event]:
    """Every event of the job from seq 0, each once, ending after the terminal one."""
    log_key = event_log_key(job_id)
    next_seq = 0
    pubsub = redis.pubsub()
    try:
        await pubsub.subscribe(channel_name(channel_prefix, job_id))
        while True:
            for raw in await redis.lrange(log_key, next_seq, -1):
                event = parse_event(raw)
                next_seq = event.seq + 1
                yield event
                if event.type in TERMINAL_EVENT_TYPES:
                    return
            # Follow the live channel until something is out of order or it goes quiet.
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=quiet_check_s)
                if message is None:
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
    finally:
        await pubsub.aclose()
