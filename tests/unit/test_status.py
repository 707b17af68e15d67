"""`arkq.status`: the fleet's status from the queue, the heartbeat hash and the failure list."""

from __future__ import annotations

import json
import time

from arq.connections import ArqRedis

from arkq.keys import failures_key, workers_key
from arkq.status import (
    FAILURES_KEPT,
    FORGET_AFTER_S,
    Failure,
    WorkerRecord,
    read_status,
    record_failure,
    redis_time,
    write_heartbeat,
)
from cli.status import _ago, render

QUEUE = "arq:queue"


def worker(name: str, *, seen_ago: float, running: int = 0, now: float, **fields: object) -> WorkerRecord:
    return WorkerRecord.model_validate(
        {
            "name": name,
            "host": name.split(":")[0],
            "pid": int(name.split(":")[1]),
            "started_at": now - 100,
            "seen_at": now - seen_ago,
            "interval_s": 2.0,
            "model": "m",
            "running": running,
            "max_jobs": 64,
            **fields,
        }
    )


async def test_an_empty_queue_without_workers(fake_redis: ArqRedis) -> None:
    found = await read_status(fake_redis, QUEUE)
    assert (found.queued, found.deferred, found.running, found.workers_alive) == (0, 0, 0, 0)
    assert found.workers == [] and found.failures == [] and found.queue_time_s is None


async def test_running_jobs_are_taken_out_of_the_due_ones_and_deferred_ones_counted_apart(
    fake_redis: ArqRedis,
) -> None:
    now = time.time()
    now_ms = int(now * 1000)
    # arq keeps a running job in its queue, scored by its enqueue time; a deferred one is scored ahead.
    await fake_redis.zadd(QUEUE, {f"due-{i}": now_ms - 1000 - i for i in range(10)})
    await fake_redis.zadd(QUEUE, {f"later-{i}": now_ms + 60_000 + i for i in range(3)})
    await write_heartbeat(
        fake_redis, QUEUE, worker("a:1", seen_ago=0.5, running=3, now=now, tokens_per_s=10.0)
    )
    await write_heartbeat(
        fake_redis, QUEUE, worker("b:2", seen_ago=1.0, running=1, now=now, tokens_per_s=5.5)
    )
    found = await read_status(fake_redis, QUEUE, now=now)
    assert (found.queued, found.deferred, found.running) == (6, 3, 4)
    assert found.workers_alive == 2 and found.tokens_per_s == 15.5


async def test_a_silent_worker_is_listed_but_not_counted_and_a_long_gone_one_is_dropped(
    fake_redis: ArqRedis,
) -> None:
    now = time.time()
    await write_heartbeat(
        fake_redis, QUEUE, worker("alive:1", seen_ago=1, running=2, now=now, queue_time_s=0.5, jobs_started=4)
    )
    await write_heartbeat(
        fake_redis, QUEUE, worker("silent:2", seen_ago=30, running=7, now=now, queue_time_s=9, jobs_started=2)
    )
    await write_heartbeat(fake_redis, QUEUE, worker("gone:3", seen_ago=FORGET_AFTER_S + 1, now=now))
    await fake_redis.hset(workers_key(QUEUE), "garbage:4", b"{not json")
    found = await read_status(fake_redis, QUEUE, now=now)
    assert [w.name for w in found.workers] == ["alive:1", "silent:2"]
    assert found.workers_alive == 1 and found.running == 2  # the silent worker's jobs are not counted
    assert found.queue_time_s == 0.5
    assert set(await fake_redis.hkeys(workers_key(QUEUE))) == {b"alive:1", b"silent:2"}


async def test_failures_are_grouped_by_kind_most_frequent_first_and_the_list_is_capped(
    fake_redis: ArqRedis,
) -> None:
    now = time.time()
    for i in range(FAILURES_KEPT + 50):
        kind = "bad_request" if i % 3 else "timeout"
        failure = Failure(job_id=f"j{i}", kind=kind, message=f"failed {i}", at=now - 1000 + i)
        await record_failure(fake_redis, QUEUE, failure)
    assert await fake_redis.llen(failures_key(QUEUE)) == FAILURES_KEPT
    found = await read_status(fake_redis, QUEUE, now=now)
    assert [group.kind for group in found.failures] == ["bad_request", "timeout"]
    assert sum(group.count for group in found.failures) == FAILURES_KEPT
    last = FAILURES_KEPT + 49
    newest = found.failures[0] if last % 3 else found.failures[1]
    assert newest.last_job_id == f"j{last}" and newest.last_message == f"failed {last}"


async def test_the_screen_shows_the_figures(fake_redis: ArqRedis) -> None:
    now = time.time()
    await fake_redis.zadd(QUEUE, {f"due-{i}": int(now * 1000) - 10 for i in range(1234)})
    await write_heartbeat(fake_redis, QUEUE, worker("host:77", seen_ago=0, running=4, now=now, jobs_ended=9))
    await write_heartbeat(fake_redis, QUEUE, worker("host:78", seen_ago=20, now=now))
    await record_failure(fake_redis, QUEUE, Failure(job_id="j", kind="timeout", message="too slow", at=now))
    screen = render(await read_status(fake_redis, QUEUE, now=now))
    assert "1,230 queued" in screen and "4 running" in screen and "1 worker alive" in screen
    line = next(line for line in screen.splitlines() if "host:77" in line)
    assert "4/64" in line and line.endswith("alive")
    assert "silent 20s" in next(line for line in screen.splitlines() if "host:78" in line)
    assert "timeout" in screen and "too slow" in screen
    assert json.loads((await read_status(fake_redis, QUEUE, now=now)).model_dump_json())["queued"] == 1230


async def test_the_fleets_queue_time_is_the_mean_over_its_jobs_not_over_its_workers(
    fake_redis: ArqRedis,
) -> None:
    now = time.time()
    busy = worker("busy:1", seen_ago=0, now=now, queue_time_s=0.001, jobs_started=1000)
    await write_heartbeat(fake_redis, QUEUE, busy)
    await write_heartbeat(
        fake_redis, QUEUE, worker("idle:2", seen_ago=0, now=now, queue_time_s=10.0, jobs_started=1)
    )
    found = await read_status(fake_redis, QUEUE, now=now)
    assert found.queue_time_s is not None and abs(found.queue_time_s - (1 + 10) / 1001) < 1e-9


async def test_liveness_is_judged_by_redis_clock_not_the_readers(fake_redis: ArqRedis) -> None:
    """A heartbeat stamped with Redis's time is alive by Redis's time, whatever the reader's clock."""
    now = await redis_time(fake_redis)
    await write_heartbeat(fake_redis, QUEUE, worker("w:1", seen_ago=0, now=now, running=1))
    found = await read_status(fake_redis, QUEUE)
    assert found.workers_alive == 1 and abs(found.at - now) < 5


def test_durations_on_screen_never_show_sixty_seconds() -> None:
    assert [_ago(s) for s in (59.6, 119.6, 3599.7, 86_399.9)] == ["1m00s", "2m00s", "1h00m", "1d00h"]
