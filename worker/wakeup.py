"""Waking idle workers the moment a job is enqueued, with polling kept as the fallback.

arq finds new jobs only by polling (`poll_delay`, 0.5 s by default: about 240 ms of pickup latency on
average), and a tiny poll delay would hammer Redis. Producers publish on `ark:wake:<queue>` after each
enqueue; every worker listens, and a message ends its current poll wait at once. A lost message costs
one poll delay, nothing more.

The same connection hears the queue's cancels (`ark:cancels:<queue>`, a running job's ID), so a
cancelled job stops the moment its cancel is made, not at a lease renewal.

arq has no hook for its wait, so the worker's start-up (`worker.arq_patches.install`) swaps the `poll`
that `arq.worker` loops on for `wakeable_poll`, before arq's poll loop begins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq.backoff import REDIS_BACKOFF
from arkq.connection import Heartbeat
from arkq.keys import cancels_channel, wake_channel
from arkq.metrics import REDIS_ERRORS

logger = logging.getLogger("arkq.worker")

_wake = asyncio.Event()


async def wakeable_poll(step: float = 0.5) -> AsyncGenerator[float, None]:
    """arq's `poll`, whose wait a wake-up cuts short."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        before = loop.time()
        _wake.clear()
        yield before - start
        wait = max(0.0, step - (loop.time() - before))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await _wake.wait()


async def after_job_end(ctx: dict[str, object]) -> None:
    """arq's `after_job_end` hook: poll again right after a job ends, so its slot takes the next job at
    once and arq tidies the finished task (a stopping worker waits for that) without a poll delay."""
    del ctx
    asyncio.get_running_loop().call_soon(_wake.set)


async def listen(
    redis: Redis, queue_name: str, *, dead_after_s: float, on_cancel: Callable[[str], None]
) -> None:
    """Wake the poll loop on every message on the queue's wake channel, and hand each job ID announced
    on its cancels channel to `on_cancel`; runs until cancelled.

    A connection that Redis stopped answering without closing it is noticed by its heartbeat within
    `dead_after_s` (`arkq.connection.Heartbeat`), and dropped for a new one like a closed one. A cancel
    announced meanwhile is found by the lease keeper (`arkq.lease`), later."""
    wakes, cancels = wake_channel(queue_name).encode(), cancels_channel(queue_name).encode()
    failures = 0
    while True:
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(wakes, cancels)
            failures = 0
            heartbeat = Heartbeat(pubsub, dead_after_s)
            while True:
                message = await heartbeat.get_message(timeout=dead_after_s)
                if message is None:
                    continue
                if message["channel"] == cancels:
                    on_cancel(message["data"].decode())
                else:
                    _wake.set()
        except RedisError as error:  # a Redis restart or a dead peer: polling covers the gap, listen again
            REDIS_ERRORS.inc()
            delay = REDIS_BACKOFF.delay(failures)
            failures += 1
            logger.warning("wake-up channel lost (%s); listening again in %.2f s", error, delay)
            await asyncio.sleep(delay)
        finally:
            with contextlib.suppress(RedisError):  # closing a dead connection may time out: let it go
                await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
