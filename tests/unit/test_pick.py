"""Picking jobs: queued ones behind any number of running ones, in queue order, never a running one,
each claimed in the same step (no two workers take one job)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker, func
from redis.exceptions import ConnectionError

from arkq.backoff import Backoff
from arkq.keys import PICK_CURSOR_TTL_MS, claim_key, pick_cursor_key
from config_module.loader import load_config
from producer import Producer
from producer import enqueue as enqueue_module
from worker import arq_patches
from worker.arq_patches import pick_jobs, poll_round

QUEUE = "arq:queue"
CLAIM_TTL_S = 310.0


async def queue_jobs(redis: ArqRedis, ids: list[str], *, running: set[str], due_in_ms: int = 0) -> None:
    base = int(time.time() * 1000) - 60_000 + due_in_ms
    for position, job_id in enumerate(ids):
        await redis.zadd(QUEUE, {job_id: base + position})
        if job_id in running:
            await redis.set(claim_key(job_id), "leased")


async def test_queued_jobs_behind_more_running_jobs_than_arqs_read_limit_are_found(
    fake_redis: ArqRedis,
) -> None:
    running = [f"running-{i}" for i in range(700)]  # arq reads 320 IDs at max_jobs=64
    await queue_jobs(fake_redis, [*running, "new-1", "new-2", "new-3"], running=set(running))
    picked = await pick_jobs(fake_redis, QUEUE, 2, CLAIM_TTL_S)
    assert [job_id for job_id, _ in picked] == ["new-1", "new-2"]
    assert [int(score) for _, score in picked] == [
        int(s) for s in await scores(fake_redis, ["new-1", "new-2"])
    ]
    assert (
        await fake_redis.get(claim_key("new-1")) == b"1" and await fake_redis.get(claim_key("new-3")) is None
    )


async def test_nothing_running_or_not_yet_due_is_picked(fake_redis: ArqRedis) -> None:
    await queue_jobs(fake_redis, ["a", "b", "c"], running={"b"})
    await queue_jobs(fake_redis, ["later"], running=set(), due_in_ms=120_000)  # deferred a minute ahead
    assert [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 10, CLAIM_TTL_S)] == ["a", "c"]
    assert await pick_jobs(fake_redis, QUEUE, 10, CLAIM_TTL_S) == []  # claimed by the pick before
    assert await pick_jobs(fake_redis, "arq:empty", 10, CLAIM_TTL_S) == []
    assert (
        await fake_redis.get(claim_key("b")) == b"leased" and await fake_redis.get(claim_key("later")) is None
    )


async def test_two_workers_picking_at_once_never_take_the_same_job(fake_redis: ArqRedis) -> None:
    ids = [f"job-{i}" for i in range(50)]
    await queue_jobs(fake_redis, ids, running=set())
    picks = await asyncio.gather(*(pick_jobs(fake_redis, QUEUE, 7, CLAIM_TTL_S) for _ in range(10)))
    taken = [job_id for pick in picks for job_id, _ in pick]
    assert sorted(taken) == sorted(ids) and len(set(taken)) == len(taken)


async def scores(redis: ArqRedis, ids: list[str]) -> list[float]:
    return [float(await redis.zscore(QUEUE, job_id) or 0) for job_id in ids]


async def noop(ctx: dict) -> int:
    return 1


def arkq_worker(redis: ArqRedis) -> Worker:
    """An arq worker with arkq's poll round, two job slots, and one trivial function."""
    return Worker(
        functions=[func(noop, name="noop")],
        redis_pool=redis,
        max_jobs=2,
        handle_signals=False,
        ctx={arq_patches.ARKQ_WORKER: True},
    )


async def test_a_poll_round_that_redis_fails_takes_no_slot(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(arq_patches, "REDIS_BACKOFF", Backoff(0.0, 0.0))
    worker = arkq_worker(fake_redis)
    await fake_redis.enqueue_job("noop")
    evalsha, failing = fake_redis.evalsha, True

    async def pick(*args: object, **kwargs: object) -> object:  # Redis goes away as the worker picks
        if failing:
            raise ConnectionError("Redis is restarting")
        return await evalsha(*args, **kwargs)

    monkeypatch.setattr(fake_redis, "evalsha", pick)
    for _ in range(3):
        await poll_round(worker)
    assert worker.job_counter == 0
    failing = False
    await poll_round(worker)
    assert worker.job_counter == 1 and len(worker.tasks) == 1  # Redis is back: the job is taken
    await asyncio.gather(*worker.tasks.values())


async def test_a_job_this_worker_still_winds_down_is_not_started_beside_itself(fake_redis: ArqRedis) -> None:
    worker = arkq_worker(fake_redis)
    job = await fake_redis.enqueue_job("noop")
    assert job is not None
    winding_down = asyncio.get_running_loop().create_future()  # its lease lost, its run not yet over
    worker.tasks[job.job_id] = asyncio.ensure_future(winding_down)
    await poll_round(worker)
    assert worker.job_counter == 0 and worker.tasks[job.job_id] is not None
    assert not worker.tasks[job.job_id].done()  # the old run is untouched, no second one took its key
    assert await fake_redis.get(claim_key(job.job_id)) is None  # the pick's claim was given back
    winding_down.set_result(None)
    await worker.tasks.pop(job.job_id)
    await poll_round(worker)
    assert worker.job_counter == 1  # once it has ended, the job is taken again
    await asyncio.gather(*worker.tasks.values())


async def test_a_pick_starts_where_the_last_one_left_off_until_the_cursor_lapses(
    fake_redis: ArqRedis,
) -> None:
    running = [f"running-{i}" for i in range(300)]
    await queue_jobs(fake_redis, [*running, "new"], running=set(running))
    assert [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 5, CLAIM_TTL_S)] == ["new"]
    cursor = pick_cursor_key(QUEUE)
    assert await fake_redis.get(cursor) == f"{int(*await scores(fake_redis, ['new']))}\nnew".encode()
    lives = await fake_redis.pttl(cursor)
    assert 0 < lives <= PICK_CURSOR_TTL_MS
    # A job given back below the cursor (its claim lapsed, say) is not looked at by the next picks...
    await fake_redis.delete(claim_key("running-7"))
    assert await pick_jobs(fake_redis, QUEUE, 5, CLAIM_TTL_S) == []
    assert await fake_redis.pttl(cursor) <= lives  # a pick moves the cursor, never its TTL
    # ...but by the first one after the cursor lapsed, which starts at the queue's head again.
    await fake_redis.delete(cursor)
    assert [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 5, CLAIM_TTL_S)] == ["running-7"]


async def test_a_job_enqueued_before_the_cursor_moves_it_back_to_that_job(fake_redis: ArqRedis) -> None:
    cursor = pick_cursor_key(QUEUE)
    ahead = int(time.time() * 1000) + 60_000  # another clock, a minute ahead
    await fake_redis.set(cursor, f"{ahead}\nzzz")
    async with Producer(redis=fake_redis, config=load_config({})) as producer:
        job = await producer.enqueue([{"role": "user", "content": "hi"}])
    (score,) = await scores(fake_redis, [job.id])
    assert await fake_redis.get(cursor) == f"{int(score)}\n".encode()  # that score, all of its jobs
    assert [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 5, CLAIM_TTL_S)] == [job.id]


async def test_jobs_sharing_a_score_are_looked_at_once_and_one_enqueued_among_them_is_found(
    fake_redis: ArqRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs enqueued in one millisecond share a score: the cursor's ID keeps picks from looking at the
    ones before it again, and a job enqueued at that score with an earlier ID moves the cursor back."""
    score = int(time.time() * 1000) - 1000
    await fake_redis.zadd(QUEUE, {f"job-{i:02d}": score for i in range(10)})
    picked = [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 4, CLAIM_TTL_S)]
    assert picked == [f"job-{i:02d}" for i in range(4)]
    assert await fake_redis.get(pick_cursor_key(QUEUE)) == f"{score}\njob-03".encode()
    # job-01's claim is given back: before the cursor, it waits for the cursor to lapse, as any job
    # given back below it does; the next pick goes on after job-03.
    await fake_redis.delete(claim_key("job-01"))
    picked = [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 2, CLAIM_TTL_S)]
    assert picked == ["job-04", "job-05"]
    # A job enqueued at the same score, its ID before the cursor's, is picked next (with job-01, now
    # looked at again).
    monkeypatch.setattr(enqueue_module, "time", SimpleNamespace(time=lambda: (score + 0.5) / 1000))
    async with Producer(redis=fake_redis, config=load_config({})) as producer:
        await producer.enqueue([{"role": "user", "content": "hi"}], job_id="job-000")
    assert await fake_redis.get(pick_cursor_key(QUEUE)) == f"{score}\n".encode()
    picked = [job_id for job_id, _ in await pick_jobs(fake_redis, QUEUE, 3, CLAIM_TTL_S)]
    assert picked == ["job-000", "job-01", "job-06"]
