"""Real processes: redis-server, the SGLang emulator and arq workers, started the way a user starts them.

`arkq bench` runs its stack with these, and so do the integration tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(f"{what} not ready within {timeout} s")


@dataclass
class Process:
    """A child process whose output goes to a file, so a test can show it when something fails."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start(name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> Process:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            argv, cwd=ROOT, env=dict(env or os.environ), stdout=log, stderr=subprocess.STDOUT
        )
    return Process(name, popen, log_path)


def start_redis(log_dir: Path, *extra: str, port: int | None = None) -> tuple[Process, str]:
    """A redis-server on a free port (or `port`), keeping its files in `log_dir`; `extra` settings win,
    e.g. `"--appendonly", "yes"` for a server whose queue survives a restart."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: `apt-get install redis-server` (CI does this)")
    port = port or free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(log_dir), *extra]
    process = start(f"redis-{port}", argv, log_dir)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_until(answers, 10, "redis-server")
    client.close()
    return process, url


def start_fake_llm(log_dir: Path, *options: str) -> tuple[Process, str]:
    port = free_port()
    argv = [str(BIN / "arkq"), "fake-llm", "--port", str(port), *options]
    process = start(f"fake-llm-{port}", argv, log_dir)
    wait_serving(process, port, "arkq fake-llm", 15)
    return process, f"http://127.0.0.1:{port}/v1"


def start_gateway(
    log_dir: Path, env: Mapping[str, str], *options: str, port: int | None = None
) -> tuple[Process, str]:
    """`arkq serve` on a free port (or `port`), as a user starts it; its base URL
    (`http://127.0.0.1:P`) once it answers /healthz."""
    port = port or free_port()
    argv = [str(BIN / "arkq"), "serve", "--host", "127.0.0.1", "--port", str(port), *options]
    process = start(f"gateway-{port}", argv, log_dir, env)
    wait_serving(process, port, "arkq serve", 30, probe=b"GET /healthz HTTP/1.0\r\n\r\n")
    return process, f"http://127.0.0.1:{port}"


def wait_serving(process: Process, port: int, what: str, timeout: float, probe: bytes | None = None) -> None:
    """Until `process` accepts connections on `port` (and, with `probe`, answers it with a 200)."""

    def serving() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                if probe is None:
                    return True
                sock.sendall(probe)
                return sock.recv(12).startswith(b"HTTP/1.1 200")
        except OSError:
            return process.popen.poll() is not None

    wait_until(serving, timeout, what)
    if process.popen.poll() is not None:
        raise RuntimeError(f"{what} exited:\n{process.log()}")


@dataclass
class WorkerFleet:
    """N `arq worker.WorkerSettings` processes, as `docker compose up --scale worker=N` runs them."""

    log_dir: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, count: int = 1) -> list[Process]:
        started = []
        for _ in range(count):
            index = len(self.processes)
            argv = [str(BIN / "arq"), "worker.WorkerSettings"]
            process = start(f"worker-{index}", argv, self.log_dir, self.env)
            self.processes.append(process)
            started.append(process)
        for process in started:

            def up(p: Process = process) -> bool:
                return "Starting worker" in p.log() or p.popen.poll() is not None

            wait_until(up, 30, process.name)
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited:\n{process.log()}")
        return started

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def by_pid(self, pid: int) -> Process:
        return next(p for p in self.processes if p.popen.pid == pid)

    def alive(self) -> list[Process]:
        return [p for p in self.processes if p.popen.poll() is None]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.log()}" for p in self.processes)


def ark_env(redis_url: str, llm_base_url: str, **settings: str) -> dict[str, str]:
    """The process environment with arkq pointed at the test's servers; `worker__max_jobs="8"` style."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARK_")}
    env.update(ARK_REDIS__URL=redis_url, ARK_LLM__BASE_URL=llm_base_url, ARK_WORKER__POLL_DELAY_S="0.05")
    env.update({f"ARK_{key.upper()}": value for key, value in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env
