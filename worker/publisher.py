"""Publishing a job's events: appended to the replay log and published live, fenced by the lease."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from redis.asyncio import Redis

from arkq.contract import (
    TERMINAL_EVENT_TYPES,
    Event,
    JobResult,
    TextEventEncoder,
    channel_name,
    encode_event,
    event_log_key,
    lease_key,
    parse_event,
    result_key,
)

# KEYS[1]: the job's lease, KEYS[2]: its replay log, KEYS[3]: its result. ARGV: token, channel, log TTL
# (ms), seq of the first event, result JSON ("" for none), result TTL (ms), events... Appends and
# publishes only while the caller holds the lease (else -1), and only if the log ends where the caller
# thinks: a call that the client retried after a lost reply (a Redis restart) finds its events there
# already and does not append them twice. A job's result and its terminal event are written together.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local length = redis.call('LLEN', KEYS[2])
local first = tonumber(ARGV[4])
local count = #ARGV - 6
if length == first + count then return length end
if length ~= first then return -2 end
if ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6]) end
for i = 7, #ARGV do
  redis.call('RPUSH', KEYS[2], ARGV[i])
  redis.call('PUBLISH', ARGV[2], ARGV[i])
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return length + count
"""

OUTPUT_EVENT_TYPES = frozenset({"token", "reasoning", "tool_call"})


class LeaseLost(Exception):
    """The job's lease is no longer ours: another attempt owns the job, this one must stop."""


class EventPublisher:
    """Gives each event of one job the next `seq` and makes it durable before it is live.

    Each event is appended to the job's replay log (a list, so its index is its `seq`) and published on
    the job's channel by one script, which first checks that this attempt still holds the job's lease:
    a subscriber that sees an event live can always find everything before it in the log, and a worker
    that lost its lease cannot interleave its events with the new owner's. Only the lease holder
    publishes, so a local counter, started from the log's length, numbers events without gaps.

    Output goes out through `emit`: one script call is in flight per job at a time, and whatever the
    stream produced meanwhile rides on the next call. A stream that trickles (a GPU's pace) has each
    token sent the moment it arrives; one that runs hot shares a Redis round trip between many tokens,
    instead of queueing one round trip behind another. `publish` and `end` wait until everything before
    them is written, and a failure (the lease lost, Redis gone) surfaces at the next call.
    """

    #: Events per script call, so that one call never holds Redis for long.
    BATCH_LIMIT = 256
    #: Events waiting to be written beyond which `emit` waits for Redis: a bound on memory.
    BACKLOG_LIMIT = 4096

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        *,
        token: str,
        channel_prefix: str,
        log_ttl_s: float,
        history: list[Event],
    ):
        self.job_id = job_id
        self.next_seq = len(history)
        #: The log already holds a terminal event: the job ended before, and must not end twice.
        self.ended = bool(history) and history[-1].type in TERMINAL_EVENT_TYPES
        #: Attempts made so far (`started` events).
        self.attempts = 0
        #: Output was published since the last reset: a new attempt must void it first.
        self.dirty = False
        for event in history:
            self._track(event.type)
        self._redis = redis
        self._token = token
        self._keys = [lease_key(job_id), event_log_key(job_id), result_key(job_id)]
        self._channel = channel_name(channel_prefix, job_id)
        self._log_ttl_ms = int(log_ttl_s * 1000)
        self._script = redis.register_script(_PUBLISH)
        self._encode_text = TextEventEncoder(job_id)
        #: Encoded events not yet written; the first of them has seq `_written`.
        self._backlog: list[bytes] = []
        self._written = self.next_seq
        self._writer: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    @classmethod
    async def open(
        cls, redis: Redis, job_id: str, *, token: str, channel_prefix: str, log_ttl_s: float
    ) -> EventPublisher:
        """Read what earlier attempts published: on a first attempt the log is empty and this is cheap."""
        history = [parse_event(raw) for raw in await redis.lrange(event_log_key(job_id), 0, -1)]
        return cls(
            redis, job_id, token=token, channel_prefix=channel_prefix, log_ttl_s=log_ttl_s, history=history
        )

    def _track(self, event_type: str) -> None:
        if event_type in OUTPUT_EVENT_TYPES:
            self.dirty = True
        elif event_type == "reset":
            self.dirty = False
        elif event_type == "started":
            self.attempts += 1

    async def emit_text(self, kind: Literal["token", "reasoning"], text: str) -> None:
        """Send a piece of output text; returns once it is queued for writing, not written."""
        await self._queue(kind, self._encode_text(self.next_seq, kind, text))

    async def emit(self, event_type: type[Event], **fields: Any) -> Event:  # type: ignore[valid-type]
        """Send any event, like `emit_text`."""
        event = event_type(job_id=self.job_id, seq=self.next_seq, **fields)
        await self._queue(event.type, encode_event(event))
        return event

    async def publish(self, event_type: type[Event], **fields: Any) -> Event:  # type: ignore[valid-type]
        """Send an event and wait until it (and everything before it) is written."""
        event = await self.emit(event_type, **fields)
        await self.flush()
        return event

    async def end(
        self, result: JobResult, event_type: type[Event], keep_result_s: float, **fields: Any
    ) -> Event:  # type: ignore[valid-type]
        """Store the result and publish the terminal event, in one step: whoever sees the event can read
        the result, and an attempt that lost its lease can write neither."""
        await self.flush()
        event = event_type(job_id=self.job_id, seq=self.next_seq, **fields)
        await self._write([encode_event(event)], result.model_dump_json(), keep_result_s)
        self.next_seq += 1
        self._track(event.type)
        return event

    async def flush(self) -> None:
        """Wait until every event sent so far is written; raise what stopped the writing, if anything."""
        while self._writer is not None and not self._writer.done():
            # shield: a job stopped meanwhile leaves the write in flight to finish, never half done.
            await asyncio.shield(self._writer)
        if self._failure is not None:
            raise self._failure

    async def _queue(self, event_type: str, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self._backlog.append(data)
        self.next_seq += 1
        self._track(event_type)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_backlog())
        if len(self._backlog) >= self.BACKLOG_LIMIT:
            await self.flush()

    async def _write_backlog(self) -> None:
        """Write the backlog in order, one call at a time, until it is empty or a call fails."""
        try:
            while self._backlog:
                batch = self._backlog[: self.BATCH_LIMIT]
                del self._backlog[: self.BATCH_LIMIT]
                await self._write(batch)
        except Exception as error:  # kept for the job to raise: nobody awaits this task
            self._failure = error
            self._backlog.clear()

    async def _write(self, events: list[bytes], result: str = "", keep_result_s: float = 0) -> None:
        args = [
            self._token,
            self._channel,
            self._log_ttl_ms,
            self._written,
            result,
            int(keep_result_s * 1000),
            *events,
        ]
        length = await self._script(keys=self._keys, args=args)
        if length == -1:
            raise LeaseLost(f"job {self.job_id}: the lease is held by another attempt")
        if length == -2:
            raise LeaseLost(f"job {self.job_id}: its log has events this attempt did not write")
        self._written += len(events)
