"""Real processes for tests (see `bench.processes`), plus a Redis that survives restarts."""

from __future__ import annotations

import time
from pathlib import Path

from bench.processes import (
    BIN,
    Process,
    WorkerFleet,
    ark_env,
    free_port,
    start,
    start_fake_llm,
    start_gateway,
    start_redis,
    wait_serving,
    wait_until,
)

__all__ = [
    "BIN",
    "PersistentRedis",
    "Process",
    "WorkerFleet",
    "ark_env",
    "free_port",
    "start",
    "start_fake_llm",
    "start_gateway",
    "start_redis",
    "wait_serving",
    "wait_until",
    "worker_pid",
]


class PersistentRedis:
    """A redis-server with AOF persistence (fsync on every write) that can be restarted in place."""

    ARGS = ("--appendonly", "yes", "--appendfsync", "always")

    def __init__(self, directory: Path):
        self.directory = directory
        self.process, self.url = start_redis(directory, *self.ARGS)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def restart(self, down_s: float = 1.0) -> None:
        """Stop it, stay down for `down_s`, start it again on the same port with the same files."""
        self.process.stop()
        time.sleep(down_s)  # fixed: the outage itself, which clients must ride out
        self.process, _ = start_redis(self.directory, *self.ARGS, port=self.port)

    def stop(self) -> None:
        self.process.stop()


def worker_pid(worker_name: str) -> int:
    """The process ID in a `started` event's worker name (`host:pid`)."""
    return int(worker_name.rsplit(":", 1)[1])
