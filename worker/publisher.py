"""Publishing jobs' events: appended to each job's replay log and published live, fenced by its lease.

Every event of every job on a worker goes to Redis through one `EventWriter`, which sends whatever
all jobs produced in one pass of the event loop (or every 16 jobs' worth) as one script call, at once,
without waiting for other calls (they are pipelined, `arkq.pipelined`). A stream that trickles (a GPU's
pace) has each token sent the moment it arrives; the tokens of many streams' decode step share calls.

Each call runs `publish.lua`: for every job in it, the events are appended to the job's log and
published only while the caller holds the job's lease (the fence, `arkq.lease`), and only if the log
ends where the caller thinks, so a call that the client retried after a lost reply (a Redis restart)
does not append its events twice. A job's result and its terminal event are written together, and
the same call gives the job's lease up: a job ends in one round trip.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq import lease, scripts
from arkq.contract import (
    TERMINAL_EVENT_TYPES,
    Event,
    JobResult,
    TextEventEncoder,
    TokenEvent,
    encode_event,
    parse_event,
)
from arkq.keys import event_channel, event_log_key, lease_key, result_key
from arkq.lease import Lease
from arkq.pipelined import PipelinedCalls

OUTPUT_EVENT_TYPES = frozenset({"token", "reasoning", "tool_call"})

#: A job's part of one call: its publisher, its events, and its result with the result's TTL (ms; 0:
#: these events do not end the job).
_Part = tuple["EventPublisher", list[bytes], str, int]


class EventWriter:
    """Writes the events of all jobs that share a Redis client, each call the moment it is due.

    Events put while the event loop runs its ready callbacks (the chunks of one decode step, read off
    many streams at once) go out together at the end of that pass, or as soon as `SEND_EVERY` jobs
    have some, so that Redis and the subscribers work on the first of a step's tokens while the worker
    still reads the rest: a token never waits for a timer, nor for other jobs' calls. Calls go out
    pipelined on a connection of the writer's own (`PipelinedCalls`); a job has at most one call out
    at a time, and its next events wait for that call's reply, which tells where its log now ends.
    """

    #: Jobs with events waiting at which a call goes out at once, before the event loop's pass ends.
    #: Fewer: more calls, each costing Redis and the worker a little; more: the first tokens of a
    #: decode step wait longer for the worker to read the rest.
    SEND_EVERY = 16

    #: Events per script call, so that one call never holds Redis for long.
    CALL_LIMIT = 1024
    #: Events of one job per call, so that a hot job does not hold back the others.
    JOB_LIMIT = 256

    _writers: ClassVar[weakref.WeakKeyDictionary[Redis, EventWriter]] = weakref.WeakKeyDictionary()

    def __init__(self, redis: Redis):
        self._calls = PipelinedCalls(redis, scripts.PUBLISH)
        #: Publishers with events to write and no call out, in the order they asked (an ordered set).
        self._waiting: dict[EventPublisher, None] = {}
        self._due = False

    @classmethod
    def of(cls, redis: Redis) -> EventWriter:
        """The writer of `redis`: one per client, so every job of a worker shares it."""
        writer = cls._writers.get(redis)
        if writer is None:
            writer = cls._writers[redis] = cls(redis)
        return writer

    def wake(self, publisher: EventPublisher) -> None:
        self._waiting[publisher] = None
        if len(self._waiting) >= self.SEND_EVERY:
            self._send()
        elif not self._due:
            self._due = True
            asyncio.get_running_loop().call_soon(self._send_due)

    def _send_due(self) -> None:
        self._due = False
        self._send()

    def _send(self) -> None:
        while self._waiting:
            batch = self._next_batch()
            try:
                keys, args = self._encode(batch)
                self._calls.call(keys, args, functools.partial(self._answered, batch))
            except Exception as error:  # an event that cannot be sent (a bug): its jobs hear of it
                self._answered(batch, error)

    def _next_batch(self) -> list[_Part]:
        batch = []
        room = self.CALL_LIMIT
        for publisher in list(self._waiting):
            if room <= 0:
                break
            del self._waiting[publisher]
            events, result, keep_ms = publisher.take(min(room, self.JOB_LIMIT))
            batch.append((publisher, events, result, keep_ms))
            room -= len(events)
        return batch

    @staticmethod
    def _encode(batch: list[_Part]) -> tuple[list[bytes], list[bytes]]:
        keys: list[bytes] = []
        args: list[bytes] = []
        for publisher, events, result, keep_ms in batch:
            keys += publisher.keys
            # Bytes, built here in one piece: what redis-py encodes fastest, argument by argument.
            ttl_ms = publisher.log_ttl_due(ending=keep_ms > 0)
            fields = (ttl_ms, publisher.written, len(events), keep_ms, publisher.channel)
            args.append(publisher.token_bytes + b"%d\n%d\n%d\n%d\n%s" % fields)
            if keep_ms:
                args.append(result.encode())
            args += events
        return keys, args

    def _answered(self, batch: list[_Part], replies: Any) -> None:
        if not isinstance(replies, list) or len(replies) != len(batch):
            # Redis stayed away, or refused the call (or answered what publish.lua never does).
            error = replies if isinstance(replies, Exception) else RedisError(f"publish answered {replies!r}")
            for publisher, *_ in batch:
                publisher.failed(error)
            return
        for (publisher, events, _, keep_ms), length in zip(batch, replies, strict=True):
            try:
                if length < 0:
                    publisher.failed(lease.refused(publisher.job_id, length))
                else:
                    publisher.wrote(len(events), ended=keep_ms > 0)
                    if publisher.has_backlog:
                        self.wake(publisher)
            except Exception as error:  # a bug in one job's bookkeeping: that job fails, alone
                publisher.failed(error)


class EventPublisher:
    """Gives each event of one job the next `seq` and makes it durable before it is live.

    Each event is appended to the job's replay log (a list, so its index is its `seq`) and published on
    the job's channel by one script, which first checks that this attempt still holds the job's lease:
    a subscriber that sees an event live can always find everything before it in the log, and a worker
    that lost its lease cannot interleave its events with the new owner's. Only the lease holder
    publishes, so a local counter, started from the log's length, numbers events without gaps.

    `emit` queues an event for the worker's `EventWriter`; `publish` and `end` also wait until
    everything before them is written. A failure (the lease lost, Redis gone) surfaces at the next call.
    """

    #: Events waiting to be written beyond which `emit` waits for Redis: a bound on memory.
    BACKLOG_LIMIT = 1024

    def __init__(
        self,
        redis: Redis,
        job_id: str,
        *,
        token: str,
        channel_prefix: str,
        log_ttl_s: float,
        history: list[Event],
        on_end: Callable[[], None] | None = None,
    ):
        self.job_id = job_id
        self.next_seq = len(history)
        #: The log already holds a terminal event: the job ended before, and must not end twice.
        self.ended = bool(history) and history[-1].type in TERMINAL_EVENT_TYPES
        #: Attempts made so far (`started` events).
        self.attempts = 0
        #: Output was published since the last reset: a new attempt voids it first, or continues it.
        self.dirty = False
        #: What that output is: its answer text in pieces (a token event each), and its event types.
        self.answer: list[str] = []
        self.output_types: set[str] = set()
        #: An earlier attempt published output, voided since or not: the job's first token is behind it.
        self.produced_before = any(event.type in OUTPUT_EVENT_TYPES for event in history)
        for event in history:
            self._track(event.type, _answer_text(event))
        self.keys = [key.encode() for key in (lease_key(job_id), event_log_key(job_id), result_key(job_id))]
        self.channel = event_channel(channel_prefix, job_id).encode()
        #: The start of this job's header in every call of `publish.lua`: its lease token.
        self.token_bytes = token.encode() + b"\n"
        self.log_ttl_ms = max(1, int(log_ttl_s * 1000))
        #: When the log's TTL was last set (monotonic seconds), or None: not by this attempt yet.
        self._ttl_set_at: float | None = None
        #: Events in the log, as far as this attempt knows: the seq of the first one still to write.
        self.written = self.next_seq
        self._writer = EventWriter.of(redis)
        self._encode_text = TextEventEncoder(job_id)
        self._backlog: list[bytes] = []
        #: The result that goes with the terminal event, and its TTL (ms).
        self._result: tuple[str, int] = ("", 0)
        self._idle = asyncio.Event()
        self._idle.set()
        self._failure: Exception | None = None
        #: Told when the ending call is written: the lease went with it.
        self._on_end = on_end

    @classmethod
    def open(cls, redis: Redis, held: Lease, *, channel_prefix: str, log_ttl_s: float) -> EventPublisher:
        """The publisher of the attempt that holds `held`, from what earlier attempts published (its
        log, read with the lease: on a first attempt it is empty). Ending the job gives the lease up."""
        history = [parse_event(raw) for raw in held.log]
        return cls(
            redis,
            held.job_id,
            token=held.token,
            channel_prefix=channel_prefix,
            log_ttl_s=log_ttl_s,
            history=history,
            on_end=held.give_up,
        )

    def _track(self, event_type: str, text: str) -> None:
        if event_type in OUTPUT_EVENT_TYPES:
            self.dirty = True
            self.output_types.add(event_type)
            if event_type == "token":
                self.answer.append(text)
        elif event_type == "reset":
            self.dirty = False
            self.answer, self.output_types = [], set()
        elif event_type == "started":
            self.attempts += 1

    def put_text(self, kind: Literal["token", "reasoning"], text: str) -> Awaitable[None] | None:
        """Queue a piece of output text for writing, at once. Returns what to wait for before the next
        one when the job's events waiting to be written are many (`BACKLOG_LIMIT`), else None."""
        return self._put(kind, self._encode_text(self.next_seq, kind, text), text)

    def put(self, event_type: type[Event], **fields: Any) -> Awaitable[None] | None:
        """Queue any event, like `put_text`."""
        event = event_type(job_id=self.job_id, seq=self.next_seq, **fields)
        return self._put(event.type, encode_event(event), _answer_text(event))

    async def emit_text(self, kind: Literal["token", "reasoning"], text: str) -> None:
        """Send a piece of output text; returns once it is queued for writing, not written."""
        waiting = self.put_text(kind, text)
        if waiting is not None:
            await waiting

    async def emit(self, event_type: type[Event], **fields: Any) -> Event:
        """Send any event, like `emit_text`."""
        event = event_type(job_id=self.job_id, seq=self.next_seq, **fields)
        waiting = self._put(event.type, encode_event(event), _answer_text(event))
        if waiting is not None:
            await waiting
        return event

    async def publish(self, event_type: type[Event], **fields: Any) -> Event:
        """Send an event and wait until it (and everything before it) is written."""
        event = await self.emit(event_type, **fields)
        await self.flush()
        return event

    async def end(
        self, result: JobResult, event_type: type[Event], keep_result_s: float, **fields: Any
    ) -> Event:
        """Store the result and publish the terminal event, in one step: whoever sees the event can read
        the result, and an attempt that lost its lease can write neither."""
        await self.flush()  # the result rides with the call that carries the terminal event alone
        self._result = (result.model_dump_json(), max(1, int(keep_result_s * 1000)))
        return await self.publish(event_type, **fields)

    async def flush(self) -> None:
        """Wait until every event sent so far is written; raise what stopped the writing, if anything."""
        await self._idle.wait()
        if self._failure is not None:
            raise self._failure

    def _put(self, event_type: str, data: bytes, text: str) -> Awaitable[None] | None:
        if self._failure is not None:
            raise self._failure
        self._backlog.append(data)
        self.next_seq += 1
        self._track(event_type, text)
        if self._idle.is_set():
            self._idle.clear()
            self._writer.wake(self)
        return self.flush() if len(self._backlog) >= self.BACKLOG_LIMIT else None

    # -- the writer's side ---------------------------------------------------------------------------

    def log_ttl_due(self, ending: bool) -> int:
        """The log's TTL (ms) for the next call to set, or 0 to leave it: set by an attempt's first call,
        by the call that ends the job (the log lives `log_ttl_s` after its last event), and again once a
        quarter of it has passed. Not per call: at a GPU's pace a job is in most calls with one event,
        and a PEXPIRE for each would be a fifth of Redis's work per token."""
        now = time.monotonic()
        due = ending or self._ttl_set_at is None or now - self._ttl_set_at > self.log_ttl_ms / 4000
        if not due:
            return 0
        self._ttl_set_at = now
        return self.log_ttl_ms

    @property
    def has_backlog(self) -> bool:
        return bool(self._backlog)

    def take(self, limit: int) -> tuple[list[bytes], str, int]:
        """The next events to write, and the result when they are the last (it goes with the end)."""
        events = self._backlog[:limit]
        del self._backlog[:limit]
        if self._backlog:
            return events, "", 0
        (result, keep_ms), self._result = self._result, ("", 0)
        return events, result, keep_ms

    def wrote(self, count: int, *, ended: bool = False) -> None:
        """`count` events were written; `ended`: with the result, and the lease was given up."""
        self.written += count
        if ended and self._on_end is not None:
            self._on_end()
        if not self._backlog:
            self._idle.set()

    def failed(self, error: Exception) -> None:
        self._failure = error
        self._backlog.clear()
        self._idle.set()


def _answer_text(event: Event) -> str:
    return event.text if isinstance(event, TokenEvent) else ""
