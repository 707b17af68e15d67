"""Publishing a job's events: the replay log first, then pub/sub, in one round trip."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from arkq.contract import TERMINAL_EVENT_TYPES, Event, channel_name, encode_event, event_log_key, parse_event


class EventPublisher:
    """Gives each event of one job the next `seq` and makes it durable before it is live.

    The event is appended to the job's replay log (a list, so its index is its `seq`) and published on
    the job's channel in the same pipeline: a subscriber that sees it live can always find everything
    before it in the log. Only one attempt of a job runs at a time, so a local counter, started from the
    log's length, numbers the events without gaps across attempts.
    """

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        *,
        channel_prefix: str,
        log_ttl_s: float,
        next_seq: int,
        ended: bool = False,
    ):
        self.job_id = job_id
        self.next_seq = next_seq
        #: The log already holds a terminal event: the job ended before, and must not end twice.
        self.ended = ended
        self._redis = redis
        self._log_key = event_log_key(job_id)
        self._channel = channel_name(channel_prefix, job_id)
        self._log_ttl_ms = int(log_ttl_s * 1000)

    @classmethod
    async def open(
        cls, redis: Redis, job_id: str, *, channel_prefix: str, log_ttl_s: float
    ) -> EventPublisher:
        async with redis.pipeline(transaction=False) as pipe:
            pipe.llen(event_log_key(job_id))
            pipe.lindex(event_log_key(job_id), -1)
            next_seq, last = await pipe.execute()
        ended = last is not None and parse_event(last).type in TERMINAL_EVENT_TYPES
        return cls(
            redis, job_id, channel_prefix=channel_prefix, log_ttl_s=log_ttl_s, next_seq=next_seq, ended=ended
        )

    async def publish(self, event_type: type[Event], **fields: Any) -> Event:  # type: ignore[valid-type]
        event = event_type(job_id=self.job_id, seq=self.next_seq, **fields)
        data = encode_event(event)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._log_key, data)
            pipe.publish(self._channel, data)
            # Renewed with every event: the log outlives its job by the TTL, however long the job runs.
            pipe.pexpire(self._log_key, self._log_ttl_ms)
            await pipe.execute()
        self.next_seq += 1
        return event
