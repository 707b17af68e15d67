"""arq's worker settings: `arq worker.WorkerSettings` (or `arkq worker`) starts a worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import socket
import sys
from typing import Any, cast

import uvloop
from arq.connections import ArqRedis, RedisSettings
from arq.worker import func

from arkq.backoff import REDIS_BACKOFF, RedisClientBackoff
from arkq.connection import ReadyCheckedPool, redis_address, redis_options
from arkq.envelope import JOB_FUNCTION, deserialize, serialize
from arkq.errors import ConfigError
from arkq.heap import freeze_loaded
from arkq.keys import health_check_key
from arkq.lease import LeaseKeeper
from config_module import loader
from config_module.settings import ArkConfig
from model_module import ArkModelLink
from worker import arq_patches, metrics, preflight, wakeup
from worker.heartbeat import Heartbeat
from worker.job import generate
from worker.logs import configure_logs
from worker.stats import WorkerStats

logger = logging.getLogger("arkq.worker")

#: arq's own attempt limit, a backstop far above anything worker.max_tries allows.
ARQ_MAX_TRIES = 1000

#: Beyond worker.job_timeout_s and three Redis outages (see `arq_job_timeout_s`).
ARQ_TIMEOUT_MARGIN_S = 10.0


async def startup(ctx: dict[str, Any]) -> None:
    """arq's `on_startup`: arkq's extensions of arq go in (`worker.arq_patches`), a Redis that refuses
    the worker for good stops it (`worker.preflight`), then one model link
    per process (its HTTP connection pool is shared by every job the worker runs), the lease keeper
    and the wake-up listener."""
    config: ArkConfig = ctx.setdefault("config", loader.config)
    preflight.log_like_arq()
    configure_logs(config.worker.log_format)
    arq_patches.install(log_content=config.worker.log_content)
    ctx[arq_patches.ARKQ_WORKER] = True
    await preflight.refuse_unusable(ctx["redis"])
    llm = config.llm
    ctx["stats"] = WorkerStats()
    ctx["metrics"] = job_metrics = metrics.JobMetrics(
        llm.model_name, enabled=config.worker.metrics_port is not None
    )
    if config.worker.metrics_port is not None:
        try:
            ctx["metrics_server"] = metrics.serve(config.worker.metrics_host, config.worker.metrics_port)
        except ConfigError as error:
            logger.error("%s", error)
            raise SystemExit(2) from None  # 2: a bad setting (cli/exit_codes.py)
    ctx["link"] = ArkModelLink(
        model_name=llm.model_name,
        base_url=llm.base_url,
        max_tokens=llm.max_tokens,
        temperature=llm.temperature,
        api_key=llm.api_key.get_secret_value() if llm.api_key else None,
        connect_timeout_s=llm.connect_timeout_s,
        read_timeout_s=llm.read_timeout_s,
        max_retries=llm.max_retries,
        backoff_base_s=llm.backoff_base_s,
        backoff_max_s=llm.backoff_max_s,
        max_retry_after_s=llm.max_retry_after_s,
    )
    if job_metrics.enabled:
        ctx["link"].on_request = job_metrics.llm_request
    ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
    logger.info(
        "worker %s: Redis %s, queue %r; LLM server %s, model %r%s%s",
        ctx["worker_name"],
        redis_address(ctx["redis"]),
        config.queue.name,
        llm.base_url,
        llm.model_name,
        "; logging prompts and answers (worker.log_content)" if config.worker.log_content else "",
        (
            f"; metrics on http://{config.worker.metrics_host}:{config.worker.metrics_port}/metrics"
            if job_metrics.enabled
            else ""
        ),
        extra={"event": "worker_started", "worker": ctx["worker_name"]},
    )
    await preflight.check_llm(ctx["link"])
    leases = LeaseKeeper(
        ctx["redis"],
        lease_s=config.worker.lease_s,
        renew_s=config.worker.lease_renew_s,
        queue_name=config.queue.name,
        claim_ttl_s=arq_claim_ttl_s(config),
    )
    leases.start()
    ctx["leases"] = leases
    ctx["wake_listener"] = asyncio.create_task(
        wakeup.listen(
            ctx["redis"],
            config.queue.name,
            dead_after_s=config.redis.dead_after_s,
            on_cancel=leases.cancel_requested,
        )
    )
    heartbeat = Heartbeat(
        ctx["redis"], config, name=ctx["worker_name"], stats=ctx["stats"], job_metrics=job_metrics
    )
    heartbeat.start()
    ctx["heartbeat"] = heartbeat
    freeze_loaded()  # what start-up loaded, out of the collector's sight (`arkq.heap`)


async def shutdown(ctx: dict[str, Any]) -> None:
    heartbeat: Heartbeat | None = ctx.get("heartbeat")
    if heartbeat is not None:
        await heartbeat.stop()
    server = ctx.get("metrics_server")
    if server is not None:
        await asyncio.to_thread(metrics.stop, server)
    listener: asyncio.Task[None] | None = ctx.get("wake_listener")
    if listener is not None:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
    leases: LeaseKeeper | None = ctx.get("leases")
    if leases is not None:
        await leases.stop()
    link: ArkModelLink | None = ctx.get("link")
    if link is not None:
        await link.aclose()


def arq_job_timeout_s(config: ArkConfig) -> float:
    """arq's own limit on a job, far enough above the job's that the job always ends itself.

    arq's timeout cancels the job like a shutdown does, and the job would then go without its terminal
    event. Outside the job's own deadline, taking the lease, reading the log and storing the end may
    each wait out a Redis outage: retries for `redis.retry_s`, the last of which may wait
    `redis.dead_after_s` for a Redis that does not answer."""
    outage_s = config.redis.retry_s + config.redis.dead_after_s
    return config.worker.job_timeout_s + 3 * outage_s + ARQ_TIMEOUT_MARGIN_S


def arq_claim_ttl_s(config: ArkConfig) -> float:
    """How long arq's claim on a job lasts before arkq's lease replaces it: arq's job timeout + 10 s."""
    return arq_job_timeout_s(config) + 10


def worker_options(config: ArkConfig) -> dict[str, Any]:
    """arq `Worker` keyword arguments for a configuration (the demo runs a worker in process with them)."""
    return {
        # arkq counts attempts itself (`started` events) and ends the job with an `error` event past
        # worker.max_tries. arq counts every start, deferrals of a job whose lease another attempt
        # holds included, and would drop the job without a word past its limit: keep that out of reach.
        "functions": [func(generate, name=JOB_FUNCTION, max_tries=ARQ_MAX_TRIES)],
        "on_startup": startup,
        "on_shutdown": shutdown,
        "after_job_end": wakeup.after_job_end,
        "queue_name": config.queue.name,
        "max_jobs": config.worker.max_jobs,
        "job_timeout": arq_job_timeout_s(config),
        "keep_result": config.worker.keep_result_s,
        "poll_delay": config.worker.poll_delay_s,
        "health_check_interval": config.worker.health_check_interval_s,
        # One key per host (a container), so `arq --check` in a container speaks for its own worker,
        # not for whichever worker of the fleet wrote the shared key last.
        "health_check_key": health_check_key(config.queue.name, socket.gethostname()),
        # SIGTERM: stop taking jobs, let running ones finish for the grace period, then hand the rest
        # back to the queue (arq re-queues a cancelled job at once, and its lease goes with it).
        "job_completion_wait": config.worker.shutdown_grace_s,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        # arq logs each job's result (a job's status here) unless told not to; its arguments, the
        # prompt, are summarised by `arq_patches` unless worker.log_content is on.
        "log_results": config.worker.log_content,
    }


def redis_pool(config: ArkConfig, url: str | None = None) -> ArqRedis:
    """The worker's Redis client, made as every arkq client is (`arkq.connection`), dead-peer
    detection included.

    arq would build its client from `RedisSettings`, which has no read timeout and no keepalive to
    pass on; so the worker hands arq a client of arq's own class instead (arq's `redis_pool`
    setting), set up as arq's `create_pool` sets up its clients. It connects on its first command, in
    the worker's event loop, and rides out a Redis that is not up yet for `redis.retry_s`, saying so
    at once (`preflight.StartupRetry`)."""
    retry = preflight.StartupRetry(RedisClientBackoff(), config.redis.retry_s)
    options = dataclasses.replace(redis_options(config, url), retry=retry)
    # redis-py annotates `from_pool` as returning its base class; it returns an instance of `cls`.
    connections = ReadyCheckedPool.from_url(options.url, **options.client_kwargs())
    pool = cast(ArqRedis, ArqRedis.from_pool(connections))
    retry.announcer.where = redis_address(pool)
    pool.job_serializer, pool.job_deserializer = serialize, deserialize
    pool.default_queue_name = config.queue.name
    return pool


def redis_settings(config: ArkConfig, url: str | None = None) -> RedisSettings:
    """arq's connection settings, by the same rules as every arkq client (`arkq.connection`), for
    what arq connects by itself: `arq --check` (the worker's own client is `redis_pool`)."""
    options = redis_options(config, url)
    settings = RedisSettings.from_dsn(options.url)
    settings.username, settings.password = options.username, options.password
    settings.conn_timeout = options.connect_timeout_s  # type: ignore[assignment]  # arq types it int; a float works
    # arq's own connect loop at start: as patient as the client's retries through an outage.
    settings.conn_retries = math.ceil(config.redis.retry_s / REDIS_BACKOFF.max_s)
    settings.conn_retry_delay = REDIS_BACKOFF.max_s  # type: ignore[assignment]  # as above
    settings.retry_on_error = list(options.retry_on_error)
    settings.retry = options.retry
    return settings


def use_uvloop() -> None:
    """Run the worker's event loop on uvloop, as uvicorn runs the gateway's: with a GPU's output
    arriving one chunk at a time, the loop's reads and writes are much of what a token costs, and
    uvloop's cost a seventh less worker CPU a token (`bench/RESULTS.md`). Called before arq makes
    its loop, by `arkq worker` and when `arq worker.WorkerSettings` imports this module; never on
    import alone, which would change the loop of whatever process imported it."""
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _worker_settings() -> type:
    """The settings class, from the process's configuration.

    arq reads settings from the class's own `__dict__` (inherited attributes are ignored), so the class
    is built from the options directly. Started by the `arq` command, a bad setting is one line and exit
    2, as `arkq worker` says it, not the traceback of arq's import."""
    try:
        config = loader.config
        arq_patches.use_log_config(config.worker.log_format)
        if os.path.basename(sys.argv[0]) == "arq":  # arq's command is what runs: a worker process
            use_uvloop()
        return type(
            "WorkerSettings",
            (),
            {
                "__doc__": "The settings `arq worker.WorkerSettings` runs with, from the configuration.",
                **worker_options(config),
                "redis_pool": redis_pool(config),
                "redis_settings": redis_settings(config),
            },
        )
    except ConfigError as error:
        if os.path.basename(sys.argv[0]) != "arq":
            raise
        print(f"arkq: {error}", file=sys.stderr)
        raise SystemExit(2) from None  # 2: a bad setting (cli/exit_codes.py)


WorkerSettings = _worker_settings()
