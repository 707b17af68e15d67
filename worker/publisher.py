"""Publishing a job's events: the replay log first, then pub/sub, in one round trip."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from arkq.contract import TERMINAL_EVENT_TYPES, Event, channel_name, encode_event, event_log_key


class EventPublisher:
    """Gives each event of one job the next `seq` and makes it durable before it is live.

    The event is appended to the job's replay log (a list, so its index is its `seq`) and published on
    the job's channel in the same pipeline: a subscriber that sees it live can always find everything
    before it in the log. Only one attempt of a job runs at a time, so a local counter, started from the
    log's length, numbers the events without gaps across attempts.
    """

    def __init__(self, redis: Redis, job_id: str, *, channel_prefix: str, log_ttl_s: float, next_seq: int):
        self.job_id = job_id
        self.next_seq = next_seq
        self._redis = redis
        self._log_key = event_log_key(job_id)
        self._channel = channel_name(channel_prefix, job_id)
        self._log_ttl_ms = int(log_ttl_s * 1000)
        self._expiry_set = False

    @classmethod
    async def open(
        cls, redis: Redis, job_id: str, *, channel_prefix: str, log_ttl_s: float
    ) -> EventPublisher:
        next_seq = await redis.llen(event_log_key(job_id))
        return cls(redis, job_id, channel_prefix=channel_prefix, log_ttl_s=log_ttl_s, next_seq=next_seq)

    async def publish(self, event_type: type[Event], **fields: Any) -> Event:  # type: ignore[valid-type]
        event = event_type(job_id=self.job_id, seq=self.next_seq, **fields)
        data = encode_event(event)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(self._log_key, data)
            pipe.publish(self._channel, data)
            # The TTL is set when the log is created and renewed at the end, so a log outlives its job.
            if not self._expiry_set or event.type in TERMINAL_EVENT_TYPES:
                pipe.pexpire(self._log_key, self._log_ttl_ms)
                self._expiry_set = True
            await pipe.execute()
        self.next_seq += 1
        return event
