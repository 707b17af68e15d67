"""The fleet at a glance, from Redis alone: what `arkq status`, the console and the metrics show.

Workers write two small records (`arkq.keys`): each its heartbeat (`WorkerRecord`) in one hash per
queue, every `worker.heartbeat_s`, and each failed job's kind and message in a capped list. A reader
needs five commands whatever the size of the queue (Redis's clock, two `ZCOUNT`s of the queue, the
hash, the list), so the status of a queue of 100,000 jobs costs what the status of an empty one does.

Running jobs stay in arq's queue until they end, so the jobs waiting to start are the due ones less
those the live workers say they run: a figure as fresh as the last heartbeats.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis

from arkq.connection import reply
from arkq.keys import failures_key, workers_key

#: Failed jobs kept in the list, newest first.
FAILURES_KEPT = 200
#: How long the failure list and the heartbeat hash outlive their last write.
RECORDS_TTL_S = 86_400
#: A worker silent for this many heartbeat intervals is no longer alive.
MISSED_BEATS = 3
#: A worker silent this long is dropped from the hash by the next reader.
FORGET_AFTER_S = 600.0


class WorkerRecord(BaseModel):
    """One worker's heartbeat: who it is and what it did lately."""

    name: str
    host: str
    pid: int
    started_at: float
    seen_at: float
    #: Seconds between heartbeats: a record older than a few of them is a worker gone.
    interval_s: float
    model: str
    running: int = 0
    max_jobs: int = 0
    #: Jobs this worker ended (any outcome) since it started.
    jobs_ended: int = 0
    #: Output tokens this worker published since it started.
    tokens: int = 0
    #: Output tokens per second over the last minute.
    tokens_per_s: float = 0.0
    #: Mean time from enqueue to start of the jobs it started in the last minute; None when none.
    queue_time_s: float | None = None
    #: How many jobs that mean is over.
    jobs_started: int = 0
    metrics_port: int | None = None

    def alive(self, now: float) -> bool:
        return now - self.seen_at <= MISSED_BEATS * self.interval_s + 1.0


class Failure(BaseModel):
    """One failed job, as the failure list keeps it."""

    job_id: str
    kind: str
    message: str
    at: float
    worker: str = ""


class FailureGroup(BaseModel):
    """The recent failures of one kind."""

    kind: str
    count: int
    last_at: float
    last_message: str
    last_job_id: str


class FleetStatus(BaseModel):
    """One reading of the queue and the workers."""

    at: float
    queue: str
    #: Jobs due and not yet running: waiting for a free worker slot.
    queued: int
    #: Jobs whose start is in the future: deferred by a retry, or enqueued with a delay.
    deferred: int
    #: Jobs the live workers run now.
    running: int
    workers: list[WorkerRecord] = Field(default_factory=list)
    workers_alive: int = 0
    #: Output tokens per second over the last minute, all live workers together.
    tokens_per_s: float = 0.0
    #: Mean queue time of the jobs started in the last minute, over the live workers; None when none.
    queue_time_s: float | None = None
    #: The latest failures (up to `FAILURES_KEPT`), grouped by kind, most frequent first.
    failures: list[FailureGroup] = Field(default_factory=list)


async def redis_time(redis: Redis) -> float:
    """Redis's clock, the one clock every worker and reader shares: a heartbeat is stamped with it and
    judged by it, so a host whose clock is off neither looks dead nor has live workers forgotten."""
    seconds, microseconds = await reply(redis.time())
    return int(seconds) + int(microseconds) / 1_000_000


async def read_status(redis: Redis, queue_name: str, *, now: float | None = None) -> FleetStatus:
    """Read the fleet's status: a constant number of Redis commands, however long the queue. `now`
    defaults to Redis's clock (`redis_time`)."""
    now = await redis_time(redis) if now is None else now
    now_ms = int(now * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcount(queue_name, "-inf", now_ms)
        pipe.zcount(queue_name, f"({now_ms}", "+inf")
        pipe.hgetall(workers_key(queue_name))
        pipe.lrange(failures_key(queue_name), 0, FAILURES_KEPT - 1)
        due, deferred, raw_workers, raw_failures = await pipe.execute()
    workers, forgotten = _workers(raw_workers, now)
    if forgotten:
        await reply(redis.hdel(workers_key(queue_name), *forgotten))
    alive = [worker for worker in workers if worker.alive(now)]
    running = sum(worker.running for worker in alive)
    started = sum(worker.jobs_started for worker in alive if worker.queue_time_s is not None)
    waited = sum(w.queue_time_s * w.jobs_started for w in alive if w.queue_time_s is not None)
    return FleetStatus(
        at=now,
        queue=queue_name,
        queued=max(0, int(due) - running),
        deferred=int(deferred),
        running=running,
        workers=workers,
        workers_alive=len(alive),
        tokens_per_s=round(sum(worker.tokens_per_s for worker in alive), 1),
        queue_time_s=waited / started if started else None,
        failures=group_failures(_failures(raw_failures)),
    )


def _workers(raw: dict[Any, Any], now: float) -> tuple[list[WorkerRecord], list[Any]]:
    """The heartbeat records, oldest worker first, and the names of workers silent long enough to forget
    (or whose record cannot be read: a record is arkq's own, so that is a record to drop, not a failure)."""
    workers, forgotten = [], []
    for name, value in raw.items():
        try:
            record = WorkerRecord.model_validate_json(value)
        except ValidationError:
            forgotten.append(name)
            continue
        if now - record.seen_at > FORGET_AFTER_S:
            forgotten.append(name)
        else:
            workers.append(record)
    workers.sort(key=lambda worker: (worker.started_at, worker.name))
    return workers, forgotten


def _failures(raw: Iterable[Any]) -> list[Failure]:
    failures = []
    for value in raw:
        try:
            failures.append(Failure.model_validate_json(value))
        except ValidationError:
            continue
    return failures


def group_failures(failures: Iterable[Failure]) -> list[FailureGroup]:
    """Failures grouped by kind, the most frequent kind first (then the most recent)."""
    groups: dict[str, FailureGroup] = {}
    for failure in failures:
        group = groups.get(failure.kind)
        if group is None:
            groups[failure.kind] = FailureGroup(
                kind=failure.kind,
                count=1,
                last_at=failure.at,
                last_message=failure.message,
                last_job_id=failure.job_id,
            )
            continue
        group.count += 1
        if failure.at > group.last_at:
            group.last_at, group.last_message, group.last_job_id = failure.at, failure.message, failure.job_id
    return sorted(groups.values(), key=lambda group: (-group.count, -group.last_at))


async def write_heartbeat(redis: Redis, queue_name: str, record: WorkerRecord) -> None:
    """Put a worker's record in the fleet's hash (the hash outlives its last write by a day)."""
    key = workers_key(queue_name)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, record.name, record.model_dump_json())
        pipe.expire(key, RECORDS_TTL_S)
        await pipe.execute()


async def remove_heartbeat(redis: Redis, queue_name: str, name: str) -> None:
    """A worker that stops takes its record out, so the fleet does not list it as gone."""
    await reply(redis.hdel(workers_key(queue_name), name))


async def record_failure(redis: Redis, queue_name: str, failure: Failure) -> None:
    """Add a failed job to the capped list of the latest failures."""
    key = failures_key(queue_name)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.lpush(key, failure.model_dump_json())
        pipe.ltrim(key, 0, FAILURES_KEPT - 1)
        pipe.expire(key, RECORDS_TTL_S)
        await pipe.execute()
