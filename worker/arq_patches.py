"""Where arkq extends arq's worker loop itself: arq 0.28 has no hooks for these.

- Its wait between polls becomes wakeable (`worker.wakeup`), for millisecond pickup.
- Its poll round (`Worker._poll_iteration`) is arkq's own, for two reasons:
  - Picking jobs. arq keeps a running job in the queue until it ends, reads a fixed number of IDs
    from the queue's head (`queue_read_limit`) and checks each with three round trips: with more jobs
    running across the fleet than that limit, a worker with free slots sees only running jobs and
    new ones wait; below it, each poll still pays for every running job ahead of the first queued
    one. arkq asks Redis once (`pick.lua`) for up to as many queued, unclaimed jobs as the worker has
    free slots.
  - A Redis error inside one round (a restart: arq's claim watches a key outside its own error
    handling, and a failed job task re-raises there) costs that round, not the worker process: the
    next round retries, after arkq's backoff. Jobs are not lost meanwhile: they stay queued, and
    their leases lapse and move.
Everything else in the round is arq's own steps, called as arq calls them.
- Its job lines (`run_job`'s `→ job_id:generate(args)`) print the job's arguments, the prompt: arq
  formats them with `args_to_string`, which becomes `job_args_summary` (message count and size only)
  unless `worker.log_content` is on. arq's `← result` lines are off the same way (`log_results`).

Nothing changes on import. The worker's start-up (`worker.settings.startup`) calls `install()`, before
arq's poll loop begins; a worker that is not arkq's (no `ARKQ_WORKER` in its ctx) keeps arq's own
round. arq is pinned to `ARQ_VERSION`, and `ARQ_INTERNALS` fingerprints the arq code these patches
rely on: `tests/unit/test_arq_internals.py` fails, saying what to re-check, when any of it changes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import arq
import arq.utils
import arq.worker
from arq.utils import timestamp_ms
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq import scripts
from arkq.backoff import REDIS_BACKOFF
from arkq.keys import ARQ_CLAIM_PREFIX, PICK_CURSOR_TTL_MS, claim_key, pick_cursor_key
from arkq.logs import LogFormat
from arkq.metrics import REDIS_ERRORS
from arkq.redis_failures import name_failure
from worker import wakeup
from worker.logs import log_config

logger = logging.getLogger("arkq.worker")

#: The arq release these patches were written against (pyproject pins it).
ARQ_VERSION = "0.28.0"
#: The arq code the patches rely on, by fingerprint (`tests/unit/test_arq_internals.py` computes them),
#: and what to re-check here when one changes.
ARQ_INTERNALS: dict[str, tuple[str, str]] = {
    "arq.utils.poll": (
        "d8cc8542a1ab2bc3",
        "wakeable_poll mirrors it: same signature, same yield-then-wait loop",
    ),
    "arq.worker.Worker.main": (
        "45ca1591c9717466",
        "on_startup runs before `poll` is looked up, and each poll step calls self._poll_iteration()",
    ),
    "arq.worker.Worker._poll_iteration": (
        "f8d39d823a0a59f2",
        "poll_round repeats its steps (pick, aborts, reap tasks, heart beat) with arkq's pick",
    ),
    "arq.worker.Worker.start_jobs": (
        "b45797cfa40bed7f",
        "_start_jobs does its bookkeeping after the claim (semaphore, job_counter, tasks, run_job(job_id, "
        "score)) for jobs pick.lua claimed as it claims them (PSETEX in-progress, in_progress_timeout_s)",
    ),
    "arq.worker.Worker._release_sem_dec_counter_on_complete": (
        "0ed101482e942c33",
        "_start_jobs gives each job's slot and count back with it when the job's task ends",
    ),
    "arq.worker.Worker.run_job": (
        "589a19059ff84ee7",
        "arkq.lease and worker.job rely on it: Retry(defer) and RetryJob re-queue the job, a cancelled "
        "job is re-queued at once, and the claim key is deleted when the attempt ends; its job lines "
        "show the arguments only through the module's `args_to_string` and the result only under "
        "`log_results` (job_args_summary replaces the one, settings turn off the other)",
    ),
}
#: The ctx key that marks a worker as arkq's (set by `worker.settings.startup`).
ARKQ_WORKER = "arkq_worker"
#: Queue entries one pick looks at, at most: far more than a fleet runs at once.
PICK_SCAN_LIMIT = 10_000

_arq_poll_iteration: Callable[[arq.worker.Worker], Awaitable[None]] = arq.worker.Worker._poll_iteration
_arq_args_to_string: Callable[[Sequence[Any], dict[str, Any]], str] = arq.utils.args_to_string
_installed = False


def job_args_summary(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """What arq's job line shows of a job's arguments when content stays out of the logs: for each, its
    shape and size (`2 messages, 1234 chars`), never its text."""
    named = [f"{key}={_summary(value)}" for key, value in sorted(kwargs.items())]
    return ", ".join([_summary(arg) for arg in args] + named)


def _summary(value: Any) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("messages"), list):
        messages = value["messages"]
        return f"<{len(messages)} messages, {len(repr(messages))} chars>"
    if isinstance(value, (str, bytes, list, tuple, dict)):
        return f"<{type(value).__name__} of {len(value)}>"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    return f"<{type(value).__name__}>"


async def pick_jobs(redis: Redis, queue_name: str, wanted: int, claim_ttl_s: float) -> list[tuple[str, int]]:
    """Up to `wanted` due jobs that no worker holds, oldest first, each claimed for this worker (arq's
    claim, for `claim_ttl_s`) in the same step: their IDs and queue scores."""
    now_ms = timestamp_ms()
    args = [
        now_ms,
        wanted,
        ARQ_CLAIM_PREFIX,
        PICK_SCAN_LIMIT,
        max(1, int(claim_ttl_s * 1000)),
        PICK_CURSOR_TTL_MS,
    ]
    keys = [queue_name, pick_cursor_key(queue_name)]
    flat: list[bytes] = await scripts.PICK(redis, keys=keys, args=args)
    return [(flat[i].decode(), int(float(flat[i + 1]))) for i in range(0, len(flat), 2)]


async def poll_round(worker: arq.worker.Worker) -> None:
    """arq's poll round with arkq's pick: start what fits, handle aborts, reap tasks, heartbeat."""
    if ARKQ_WORKER not in worker.ctx:
        await _arq_poll_iteration(worker)
        return
    try:
        free = worker.max_jobs - worker.job_counter
        if worker.burst and worker.max_burst_jobs >= 0:
            free = min(free, worker.max_burst_jobs - worker._jobs_started())
        if worker.allow_pick_jobs and free > 0:
            picked = await pick_jobs(worker.pool, worker.queue_name, free, worker.in_progress_timeout_s)
            await _start_jobs(worker, picked)
        if worker.allow_abort_jobs:
            await worker._cancel_aborted_jobs()
        for job_id, task in list(worker.tasks.items()):
            if task.done():
                del worker.tasks[job_id]
                task.result()  # as arq does: an error in its own job runner surfaces here
        await worker.heart_beat()
        worker.ctx[_FAILED_ROUNDS] = 0
    except RedisError as error:
        REDIS_ERRORS.inc()
        failed = worker.ctx.get(_FAILED_ROUNDS, 0)
        worker.ctx[_FAILED_ROUNDS] = failed + 1
        delay = REDIS_BACKOFF.delay(failed)
        logger.warning("poll round failed: %s; trying again in %.2f s", name_failure(error), delay)
        await asyncio.sleep(delay)


_FAILED_ROUNDS = "arkq_failed_poll_rounds"


async def _start_jobs(worker: arq.worker.Worker, picked: list[tuple[str, int]]) -> None:
    """Start jobs the pick has claimed, with arq's own bookkeeping (`Worker.start_jobs` after its
    claim: a slot of the semaphore, the job counter, the task map, the slot given back at the end).

    arq's `start_jobs` claims each job itself, in three round trips and a transaction (WATCH, EXISTS,
    ZSCORE, MULTI/PSETEX/EXEC); with several workers picking the same due jobs, every loser paid them
    too. The pick claims atomically instead, so this costs Redis nothing. A job this worker is still
    winding down (its lease lost, say, to a Redis that went silent) is not started again beside itself
    (arq keys its running tasks by job ID): its new claim is given back, and another worker, or this
    one once the old run has ended, takes it."""
    for job_id, score in picked:
        if _still_running(worker, job_id):
            # Its claim given back, and the cursor with it: the pick passed the job, and the next one
            # must look at it again.
            await worker.pool.delete(claim_key(job_id), pick_cursor_key(worker.queue_name))
            continue
        await worker.sem.acquire()  # never waits: the pick asked for free slots only
        worker.job_counter += 1
        task = worker.loop.create_task(worker.run_job(job_id, score))
        task.add_done_callback(lambda _: worker._release_sem_dec_counter_on_complete())
        worker.tasks[job_id] = task


def _still_running(worker: arq.worker.Worker, job_id: str) -> bool:
    task = worker.tasks.get(job_id)
    return task is not None and not task.done()


def install(*, log_content: bool = False) -> None:
    """Put the wakeable wait, arkq's poll round and the job-line summary (unless `log_content`) in
    place; idempotent. Called at worker start-up."""
    global _installed
    arq.worker.args_to_string = _arq_args_to_string if log_content else job_args_summary  # type: ignore[attr-defined, assignment]  # see above
    if _installed:
        return
    if arq.VERSION != ARQ_VERSION:
        logger.warning(
            "arq %s is installed; arkq's worker patches were written for arq %s (see worker/arq_patches.py)",
            arq.VERSION,
            ARQ_VERSION,
        )
    arq.worker.poll = wakeup.wakeable_poll  # type: ignore[attr-defined]  # arq has no hook: see above
    arq.worker.Worker._poll_iteration = poll_round  # type: ignore[method-assign, assignment]  # see above
    _installed = True


def use_log_config(log_format: LogFormat) -> None:
    """Have arq's command (`arq worker.WorkerSettings`) set up logging as `arkq worker` does
    (`worker.logs.log_config`), so that its first lines are in `worker.log_format` too.

    arq's `cli` imports the settings, then calls `default_log_config(verbose)` through its own module's
    name for it: replacing that name, when arq's command is what runs, is the hook."""
    command = sys.modules.get("arq.cli")
    if command is not None:
        command.default_log_config = functools.partial(log_config, log_format=log_format)  # type: ignore[attr-defined]  # see above
