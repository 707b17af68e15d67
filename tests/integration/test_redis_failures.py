"""Every `arkq` command against each way Redis can fail: one line on stderr, the documented exit code,
never a traceback, and nothing written half-way.

Each failure is made for real on its own redis-server: unreachable (nothing listening), out of memory
(`maxmemory` reached under `noeviction`), a read-only replica (`REPLICAOF` a primary that is not
there), an ACL user allowed nothing but to connect (NOPERM), a wrong password (WRONGPASS), and a
script running past the busy threshold (BUSY). Before it breaks, each server gets one queued job, so
`watch`, `result` and `cancel` have something to act on.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from cli import exit_codes
from tests.servers import BIN, Process, ark_env, free_port, start, start_redis, wait_until

QUEUED = "queued-before-the-failure"
SUBMITTED = "submitted-during-the-failure"

#: Quick to give up, so an unreachable Redis costs seconds.
FAST = {"redis__retry_s": "1", "redis__connect_timeout_s": "2"}


@dataclass
class BrokenRedis:
    """A redis-server failing one way; `admin` still reaches it (with the right password)."""

    name: str
    url: str  # what arkq is given
    admin: redis.Redis | None  # None: there is no server
    busy: list[threading.Thread] = field(default_factory=list)

    def end_busy_script(self) -> None:
        """SCRIPT KILL the busy script, if any: Redis answers everyone again."""
        if self.busy and self.admin is not None:
            self.admin.script_kill()
            for thread in self.busy:
                thread.join(10)
            self.busy.clear()


def enqueue_one(url: str) -> None:
    """A queued job, written as a producer writes it, through the CLI's own producer."""
    import asyncio

    from config_module.settings import ArkConfig
    from producer import Producer

    async def go() -> None:
        async with Producer(url, config=ArkConfig()) as producer:
            await producer.enqueue([{"role": "user", "content": "hi"}], job_id=QUEUED)

    asyncio.run(go())


FAILURES = ["unreachable", "out_of_memory", "read_only", "no_permission", "wrong_password", "busy"]


@pytest.fixture(params=FAILURES)
def broken(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokenRedis]:
    name: str = request.param
    if name == "unreachable":
        yield BrokenRedis(name, f"redis://127.0.0.1:{free_port()}/0", None)
        return
    process, url = start_redis(tmp_path)
    admin = redis.Redis.from_url(url)
    enqueue_one(url)
    broken = BrokenRedis(name, url, admin)
    port = url.rsplit(":", 1)[1].split("/")[0]
    if name == "out_of_memory":
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
    elif name == "read_only":
        admin.execute_command("REPLICAOF", "127.0.0.1", free_port())
    elif name == "no_permission":
        allowed = ("on", ">secret", "~*", "&*", "-@all", "+@connection")
        admin.execute_command("ACL", "SETUSER", "reader", *allowed)
        broken.url = f"redis://reader:secret@127.0.0.1:{port}/0"
    elif name == "wrong_password":
        admin.config_set("requirepass", "right")
        admin = broken.admin = redis.Redis.from_url(url, password="right")
        broken.url = f"redis://:wrong@127.0.0.1:{port}/0"
    elif name == "busy":
        admin.config_set("busy-reply-threshold", 50)
        spinner = redis.Redis.from_url(url)

        def spin() -> None:
            # Until SCRIPT KILL: Redis answers every other client BUSY meanwhile.
            with pytest.raises(redis.ResponseError):
                spinner.eval("while true do end", 0)

        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        wait_until(lambda: _is_busy(url), 10, "the busy script")
        broken.busy.append(thread)
    try:
        yield broken
    finally:
        broken.end_busy_script()
        admin.close()
        process.stop()


def _is_busy(url: str) -> bool:
    client = redis.Redis.from_url(url)
    try:
        client.ping()
        return False
    except redis.ResponseError as error:
        return str(error).startswith("BUSY")
    finally:
        client.close()


#: (command, failure) → the exit code; the rest are the failure's own code (`CODES`).
CODES = {
    "unreachable": exit_codes.REDIS_UNREACHABLE,
    "out_of_memory": exit_codes.REDIS_OUT_OF_MEMORY,
    "read_only": exit_codes.REDIS_READ_ONLY,
    "no_permission": exit_codes.REDIS_NOT_ALLOWED,
    "wrong_password": exit_codes.REDIS_NOT_ALLOWED,
    "busy": exit_codes.REDIS_BUSY,
}
#: What Redis's own words look like in the line, by failure.
SAID = {
    "unreachable": "cannot reach Redis",
    "out_of_memory": "OOM",
    "read_only": "READONLY",
    "no_permission": "NOPERM",
    "wrong_password": "invalid username-password pair",
    "busy": "BUSY",
}
#: Reads still work out of memory and on a replica: the commands that only read answer as usual.
READS_WORK = {
    ("watch", "out_of_memory"): exit_codes.TIMEOUT,  # the job is queued, and stays so
    ("watch", "read_only"): exit_codes.TIMEOUT,
    ("result", "out_of_memory"): exit_codes.NOT_ENDED,  # "no result yet: it is queued"
    ("result", "read_only"): exit_codes.NOT_ENDED,
}

COMMANDS = {
    "submit": ["submit", "hello", "--job-id", SUBMITTED, "--timeout", "5"],
    "watch": ["watch", QUEUED, "--timeout", "2"],
    "result": ["result", QUEUED],
    "cancel": ["cancel", QUEUED],
    "worker": ["worker", "--burst"],
}


def arkq(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = ark_env(url, "http://127.0.0.1:9/v1", **FAST)
    return subprocess.run(
        [str(BIN / "arkq"), *args], env=env, capture_output=True, text=True, timeout=90, check=False
    )


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "worker"])
def test_job_commands_name_each_redis_failure(broken: BrokenRedis, command: str) -> None:
    ran = arkq(broken.url, *COMMANDS[command])
    assert "Traceback" not in ran.stderr, ran.stderr
    expected = READS_WORK.get((command, broken.name))
    if expected is not None:
        assert ran.returncode == expected, ran.stderr
        return
    assert ran.returncode == CODES[broken.name], ran.stderr
    failure_lines = [line for line in ran.stderr.splitlines() if line.startswith("arkq: ")]
    assert len(failure_lines) == 1, ran.stderr
    assert SAID[broken.name] in failure_lines[0], ran.stderr
    if broken.admin is not None and command in {"submit", "cancel"}:
        # Refused means refused: the job was not written, nor the queued one touched.
        broken.end_busy_script()
        assert not broken.admin.keys(f"*{SUBMITTED}*")
        assert broken.admin.zscore("arq:queue", QUEUED) is not None
        assert not broken.admin.exists(f"ark:result:{QUEUED}", f"ark:cancel:{QUEUED}")


@pytest.mark.parametrize("broken", [f for f in FAILURES if f != "out_of_memory"], indirect=True)
def test_worker_refuses_a_redis_it_cannot_use(broken: BrokenRedis) -> None:
    ran = arkq(broken.url, *COMMANDS["worker"])
    assert "Traceback" not in ran.stderr, ran.stderr
    assert ran.returncode == CODES[broken.name], ran.stderr
    assert SAID[broken.name] in ran.stderr.splitlines()[-1], ran.stderr


@pytest.mark.parametrize("broken", ["out_of_memory"], indirect=True)
def test_worker_waits_out_a_redis_out_of_memory_and_runs_the_job(
    broken: BrokenRedis, fake_llm: str, log_dir: Path
) -> None:
    """Out of memory is a pause: the worker says so by name, and runs the job once memory is freed."""
    assert broken.admin is not None
    env = ark_env(broken.url, fake_llm, **FAST)
    worker: Process = start("worker-oom", [str(BIN / "arkq"), "worker"], log_dir, env)
    try:
        wait_until(lambda: "Redis is out of memory" in worker.log(), 60, "the worker naming the OOM")
        assert broken.admin.get(f"ark:result:{QUEUED}") is None
        broken.admin.config_set("maxmemory", 0)
        wait_until(lambda: broken.admin.get(f"ark:result:{QUEUED}") is not None, 60, "the job's result")
        assert worker.popen.poll() is None, worker.log()
        assert "Traceback" not in worker.log()
    finally:
        worker.stop()


def test_debug_adds_the_traceback() -> None:
    ran = arkq(f"redis://127.0.0.1:{free_port()}/0", "--debug", "result", "some-job")
    assert ran.returncode == exit_codes.REDIS_UNREACHABLE
    assert "Traceback" in ran.stderr and ran.stderr.splitlines()[-1].startswith("arkq: cannot reach Redis")


async def test_a_timed_out_enqueue_may_have_happened_and_retrying_it_runs_once(tmp_path: Path) -> None:
    """Redis goes silent mid-enqueue: `enqueue` gives up within its timeout with the job's ID, and says
    the job may have been queued. It was (the command reaches Redis when the network comes back), and
    enqueueing again with that ID queues nothing new."""
    from arkq.errors import RedisUnavailable
    from config_module.settings import ArkConfig
    from producer import Producer
    from tests.tcp_proxy import ProxyProcess

    process, url = start_redis(tmp_path)
    admin = redis.Redis.from_url(url)
    proxy = ProxyProcess(int(url.rsplit(":", 1)[1].split("/")[0]))
    config = ArkConfig.model_validate({"redis": {"connect_timeout_s": 1, "retry_s": 1}})
    try:
        async with Producer(proxy.url(), config=config) as producer:
            await producer.enqueue([{"role": "user", "content": "first"}])  # Redis knows the script now
            proxy.stall()
            with pytest.raises(RedisUnavailable) as timed_out:
                await producer.enqueue([{"role": "user", "content": "hi"}])
            job_id = timed_out.value.job_id
            assert job_id is not None and f"job_id={job_id!r}" in str(timed_out.value)
            assert "may still have been queued" in str(timed_out.value)
            proxy.resume()
            wait_until(lambda: admin.zscore("arq:queue", job_id) is not None, 10, "the held enqueue landing")
            again = await producer.enqueue([{"role": "user", "content": "hi"}], job_id=job_id)
            assert again.id == job_id and admin.zcard("arq:queue") == 2
    finally:
        proxy.stop()
        admin.close()
        process.stop()


@pytest.mark.parametrize(
    ("host", "reason"),
    [("127.0.0.1", "connection refused"), ("nohost.invalid", "unknown host")],
)
def test_a_refused_connection_or_an_unknown_host_fails_at_once_naming_the_url(host: str, reason: str) -> None:
    port = free_port() if host == "127.0.0.1" else 6379
    url = f"redis://:secret@{host}:{port}/0"
    env = ark_env(url, "http://127.0.0.1:9/v1", redis__connect_timeout_s="30")
    began = time.monotonic()
    ran = subprocess.run(
        [str(BIN / "arkq"), "submit", "hi"], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert time.monotonic() - began < 15, "not after redis.connect_timeout_s (30 s) of trying again"
    assert ran.returncode == exit_codes.REDIS_UNREACHABLE and "Traceback" not in ran.stderr, ran.stderr
    [line] = [line for line in ran.stderr.splitlines() if line.startswith("arkq: ")]
    assert f"cannot reach Redis at redis://:***@{host}:{port}/0: {reason}" in line, line
    assert "secret" not in ran.stderr
