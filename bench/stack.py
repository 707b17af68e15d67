"""What a benchmark runs against: a fresh redis-server, the SGLang emulator, N worker processes and,
for the gateway's scenario, one `arkq serve`.

Everything is started the way a user starts it (`redis-server`, `arkq fake-llm`, `arq
worker.WorkerSettings`) with arkq's default settings, except `worker.max_jobs`, which a benchmark
raises so one worker can hold every stream it is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.processes import (
    Process,
    WorkerFleet,
    ark_env,
    start_fake_llm,
    start_gateway,
    start_redis,
    wait_serving,
)

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) that process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of process `pid` now."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass
class Stack:
    """redis-server + emulator + workers in `directory` (their logs stay there)."""

    directory: Path
    max_jobs: int = 512
    redis: Process = field(init=False)
    redis_url: str = field(init=False)
    llm: Process = field(init=False)
    llm_url: str = field(init=False)
    fleet: WorkerFleet = field(init=False)
    _gateway: Process | None = field(init=False, default=None)
    _gateway_url: str = field(init=False, default="")

    def __enter__(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.redis, self.redis_url = start_redis(self.directory)
        # Batched pacing: requests that ask for no pacing of their own follow one decode clock, as on
        # a GPU; the others (flat out, or paced on a timer of their own) are as before.
        self.llm, self.llm_url = start_fake_llm(self.directory, "--pacing", "batched")
        # The helpers' test settings (a short poll delay) do not apply: a benchmark runs the defaults.
        env = ark_env(self.redis_url, self.llm_url, worker__max_jobs=str(self.max_jobs))
        env.pop("ARK_WORKER__POLL_DELAY_S")
        self.fleet = WorkerFleet(self.directory, env)
        return self

    def gateway(self) -> tuple[str, int]:
        """`arkq serve` on this stack (started on first use, without keys, on loopback): its URL and pid."""
        if self._gateway is None:
            self._gateway, self._gateway_url = start_gateway(self.directory, self.fleet.env)
        return self._gateway_url, self._gateway.popen.pid

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._gateway is not None:
            self._gateway.stop()
        self.fleet.stop()
        self.llm.stop()
        self.redis.stop()

    def workers(self, count: int) -> list[int]:
        """Exactly `count` running workers (started or stopped as needed); their process IDs."""
        alive = self.fleet.alive()
        for process in alive[count:]:
            process.stop()
        if len(alive) < count:
            self.fleet.start(count - len(alive))
        return [process.popen.pid for process in self.fleet.alive()]

    def restart_workers(self, count: int, **settings: str) -> list[int]:
        """Exactly `count` fresh workers, with `settings` (`worker__metrics_port="9100"` style) on top of
        the stack's own; settings not given go back to the stack's."""
        for process in self.fleet.alive():
            process.stop()
        base = ark_env(self.redis_url, self.llm_url, worker__max_jobs=str(self.max_jobs))
        base.pop("ARK_WORKER__POLL_DELAY_S")
        base.update({f"ARK_{key.upper()}": value for key, value in settings.items()})
        self.fleet.env = base
        pids = self.workers(count)
        port = settings.get("worker__metrics_port")
        if port is not None:  # it opens in the worker's start-up, after the line `workers` waits for
            for process in self.fleet.alive():
                wait_serving(process, int(port), f"{process.name}'s /metrics", 30)
        return pids

    def worker_cpu_s(self) -> float:
        return sum(cpu_seconds(process.popen.pid) for process in self.fleet.alive())

    def llm_cpu_s(self) -> float:
        return cpu_seconds(self.llm.popen.pid)

    def redis_cpu_s(self) -> float:
        return cpu_seconds(self.redis.popen.pid)
