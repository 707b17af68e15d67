"""`arkq demo`: the whole pipeline in one process, for a first look on a bare machine.

Nothing is faked that the real deployment would change: the producer, the arq worker, the event stream
and ArkModelLink's HTTP client are the real ones. Only their surroundings are stood in for: an
in-process fakeredis instead of redis-server, and the SGLang emulator instead of a GPU server.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import arq.worker
import fakeredis
from arq.connections import ArqRedis
from arq.worker import Worker
from redis.asyncio import Redis

from arkq.envelope import deserialize, serialize
from config_module import loader
from config_module.settings import ArkConfig
from fake_llm import running_fake_llm
from producer import Job, Producer
from worker.settings import worker_options


async def _no_server_info(redis: Redis, log_func: Callable[[str], Any]) -> None:
    """fakeredis has no INFO command, which arq's worker only uses to log the server's version."""
    log_func("redis: in-process fakeredis")


async def demo(prompt: str, *, itl_ms: float = 30.0) -> int:
    arq.worker.log_redis_info = _no_server_info  # type: ignore[attr-defined]  # arq imports it unexported
    fake = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    redis = ArqRedis(
        connection_pool=fake.connection_pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=loader.config.queue.name,
    )
    async with running_fake_llm(ttft_ms=150, itl_ms=itl_ms) as llm:
        config = _demo_config(llm.base_url)
        async with Producer(config=config, redis=redis) as producer:
            job = await producer.enqueue([{"role": "user", "content": prompt}])
            sys.stdout.write(
                f"arkq demo: asked {prompt!r} (job {job.id}).\n"
                "The answer comes from the SGLang emulator (`arkq fake-llm`): stand-in words, no model's.\n"
                "Point llm.base_url at an SGLang server for real answers.\n\n"
            )
            # A burst worker stops once the queue is empty and its jobs are finished.
            worker = Worker(
                **worker_options(config),
                redis_pool=redis,
                ctx={"config": config},
                burst=True,
                handle_signals=False,
            )
            worker_task = asyncio.create_task(worker.async_run())
            try:
                return await _follow(job)
            finally:
                await worker_task
                await worker.close()


def _demo_config(base_url: str) -> ArkConfig:
    config = loader.config
    return config.model_copy(update={"llm": config.llm.model_copy(update={"base_url": base_url})})


async def _follow(job: Job) -> int:
    out = sys.stdout
    async for event in job.events():
        if event.type == "started":
            going_on = ", continuing the answer" if event.continues else ""
            out.write(f"[started: attempt {event.attempt} on {event.worker}{going_on}]\n")
        elif event.type == "token":
            out.write(event.text)
        elif event.type == "error":
            out.write(f"\n[error {event.kind}: {event.message}]\n")
        out.flush()
    result = await job.fetch_result()
    if result is None or not result.ok:
        return 1
    timings, tokens = result.timings, (result.usage or {}).get("completion_tokens")
    out.write(
        f"\n\n[done: {result.finish_reason}, {tokens} tokens, queued {timings.queued_s * 1000:.1f} ms, "
        f"first token {(timings.ttft_s or 0) * 1000:.0f} ms, total {timings.total_s:.2f} s]\n"
        "Next: run redis-server, `arkq fake-llm` (or SGLang), `arkq worker`, then `arkq submit 'Hello'`.\n"
    )
    return 0
