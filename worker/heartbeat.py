"""The worker's heartbeat: its record in Redis every `worker.heartbeat_s` (`arkq.status`).

`arkq status` and the console list the fleet from these records alone. With metrics on, the same beat
reads the fleet's status back and sets the fleet gauges (`arkq.metrics`), so every worker's `/metrics`
carries the queue's depth as Redis has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq import metrics, status
from config_module.settings import ArkConfig
from worker.metrics import JobMetrics
from worker.stats import WorkerStats

logger = logging.getLogger("arkq.worker")


class Heartbeat:
    """Writes one worker's record until stopped, then takes it out."""

    def __init__(
        self,
        redis: Redis,
        config: ArkConfig,
        *,
        name: str,
        stats: WorkerStats,
        job_metrics: JobMetrics,
    ):
        self.redis = redis
        self.config = config
        self.name = name
        self.stats = stats
        self.job_metrics = job_metrics
        self._task: asyncio.Task[None] | None = None

    def record(self, now: float) -> status.WorkerRecord:
        """The record as of `now` (Redis's clock: `arkq.status.redis_time`)."""
        worker, llm = self.config.worker, self.config.llm
        queue_time_s, jobs_started = self.stats.queue_times()
        return status.WorkerRecord(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.stats.started_at,
            seen_at=now,
            interval_s=worker.heartbeat_s,
            model=llm.model_name,
            running=self.stats.running,
            max_jobs=worker.max_jobs,
            jobs_ended=self.stats.jobs_ended,
            tokens=self.stats.tokens,
            tokens_per_s=round(self.stats.tokens_per_s(), 1),
            queue_time_s=queue_time_s,
            jobs_started=jobs_started,
            metrics_port=worker.metrics_port,
        )

    async def beat(self) -> None:
        """Write the record once (and, with metrics on, read the fleet's status into the gauges)."""
        queue = self.config.queue.name
        now = await status.redis_time(self.redis)
        await status.write_heartbeat(self.redis, queue, self.record(now))
        if self.job_metrics.enabled:
            self.job_metrics.running(self.stats.running)
            found = await status.read_status(self.redis, queue, now=now)
            metrics.show_fleet(found, self.config.llm.model_name)

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_beating(), name="arkq-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisError, OSError):
            async with asyncio.timeout(self.config.redis.connect_timeout_s):
                await status.remove_heartbeat(self.redis, self.config.queue.name, self.name)

    async def _keep_beating(self) -> None:
        while True:
            try:
                await self.beat()
            except RedisError as error:  # the poll rounds say Redis is away; a late beat is harmless
                metrics.REDIS_ERRORS.inc()
                metrics.hide_fleet(self.config.llm.model_name)  # not the last reading, as if current
                logger.debug("heartbeat not written: %s", error)
            except Exception:  # never let the heartbeat die: the fleet would list the worker as gone
                logger.exception("heartbeat failed unexpectedly")
            await asyncio.sleep(self.config.worker.heartbeat_s)
