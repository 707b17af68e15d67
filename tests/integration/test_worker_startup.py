"""What a worker process says about itself, as a user starting one reads it: which Redis, which LLM
server and model, whether that server answers; an unreachable Redis or LLM server in one line each;
no prompt or answer text in its logs unless `worker.log_content` asks for it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer import JobFailed, Producer
from tests.servers import BIN, WorkerFleet, ark_env, free_port, start, wait_until


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that nothing listens on (bound, never listening, so nothing else takes it)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield holder.getsockname()[1]


def wait_for_line(fleet: WorkerFleet, text: str, timeout: float = 30) -> str:
    wait_until(lambda: text in fleet.logs(), timeout, f"{text!r} in the worker's log")
    return fleet.logs()


def test_a_worker_names_its_redis_llm_server_and_model_and_what_the_server_answered(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    logs = wait_for_line(fleet, "LLM server check:")
    port = redis_url.rsplit(":", 1)[1]
    assert f"Redis redis://127.0.0.1:{port}; LLM" not in logs  # the whole URL, database included
    assert f"Redis redis://127.0.0.1:{port}, queue 'arq:queue'; LLM server {fake_llm}, model 'tgi'" in logs
    assert f"LLM server check: {fake_llm} answered in " in logs and "serving ['tgi']" in logs


async def test_a_worker_whose_llm_server_is_down_says_so_loudly_and_runs_anyway(
    fleet: WorkerFleet, producer: Producer, closed_port: int
) -> None:
    """Item 2 (the loud start-up line) and item 6: a job against the dead server ends with one cause,
    called a refusal, and the worker sends no abort to the server it could not reach."""
    down = f"http://127.0.0.1:{closed_port}/v1"
    fleet.env.update(ARK_LLM__BASE_URL=down, ARK_LLM__MAX_RETRIES="1", ARK_LLM__BACKOFF_BASE_S="0.05")
    fleet.env.update(ARK_WORKER__MAX_TRIES="2")
    fleet.start(1)
    logs = wait_for_line(fleet, "LLM server check FAILED")
    line = next(line for line in logs.splitlines() if "LLM server check FAILED" in line)
    assert f"at {down} (connect: the LLM server at 127.0.0.1:{closed_port} refused the connection" in line
    assert "The worker starts anyway" in line
    assert all(p.popen.poll() is None for p in fleet.processes), "the worker runs on"

    job = await producer.enqueue([{"role": "user", "content": "anyone there?"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=60)
    message = failed.value.result.error.message if failed.value.result.error else ""
    assert failed.value.kind == "connect"
    assert "refused the connection" in message
    assert message.startswith(f"connect: the LLM server at 127.0.0.1:{closed_port} refused the connection")
    assert "Timeout" not in message and "Cannot connect" not in message and message.count("connect:") == 1


async def test_a_job_cancelled_while_its_llm_server_is_down_sends_it_no_abort(
    fleet: WorkerFleet, producer: Producer, closed_port: int
) -> None:
    """Item 6: a stopped job's worker asks the server to abort its request, unless it knows the
    server could not be reached: that abort could only fail, with a warning in the log."""
    fleet.env.update(
        ARK_LLM__BASE_URL=f"http://127.0.0.1:{closed_port}/v1",
        ARK_LLM__MAX_RETRIES="50",
        ARK_LLM__BACKOFF_BASE_S="0.2",
        ARK_LLM__BACKOFF_MAX_S="0.5",
    )
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "anyone there?"}])
    wait_for_line(fleet, "LLM call failed")  # the link is retrying against the dead server
    await job.cancel()
    with pytest.raises(JobFailed) as ended:
        await job.result(timeout=60)
    assert ended.value.result.status == "cancelled"
    assert "abort" not in fleet.logs(), "no abort is tried against a server that cannot be reached"


def test_a_worker_says_at_once_that_its_redis_cannot_be_reached_and_keeps_trying(
    tmp_path: Path, fake_llm: str
) -> None:
    port = free_port()
    # A long retry: without the start-up line, the worker would say nothing for 120 s.
    env = ark_env(f"redis://:hunter2@127.0.0.1:{port}/0", fake_llm, redis__retry_s="120")
    fleet = WorkerFleet(tmp_path, env)
    try:
        fleet.start(1)
        logs = wait_for_line(fleet, "cannot reach Redis", timeout=60)
        line = next(line for line in logs.splitlines() if "cannot reach Redis" in line)
        assert f"cannot reach Redis at redis://:***@127.0.0.1:{port}/0: connection refused" in line
        assert "hunter2" not in logs
        assert logs.count("cannot reach Redis") == 1, "one line, not one per try"
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--dir", str(tmp_path), "--requirepass", "hunter2"]
        redis_process = start("redis", argv, tmp_path)
        try:
            wait_for_line(fleet, "LLM server check:", timeout=60)  # it kept trying, and got through
        finally:
            redis_process.stop()
    finally:
        fleet.stop()


async def test_worker_logs_hold_no_prompt_or_answer_by_default(
    fleet: WorkerFleet, producer: Producer
) -> None:
    """Item 7: arq's job lines printed the prompt (`generate({'messages': [{'content': ...`)."""
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "my bank PIN is 7519, keep it safe"}])
    result = await job.result(timeout=60)
    wait_for_line(fleet, f"← {job.id}:generate")
    logs = fleet.logs()
    assert f"{job.id}:generate(<1 messages, " in logs  # the job, its size: never its text
    assert "7519" not in logs and "bank PIN" not in logs
    assert result.text and result.text[:40] not in logs
    assert "'status'" not in logs  # nor what the job returned


async def test_log_content_puts_prompts_in_the_worker_log_for_debugging(
    fleet: WorkerFleet, producer: Producer
) -> None:
    fleet.env["ARK_WORKER__LOG_CONTENT"] = "true"
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "debug me: 4242"}])
    await job.result(timeout=60)
    logs = wait_for_line(fleet, f"← {job.id}:generate")
    assert "logging prompts and answers (worker.log_content)" in logs
    assert "'content': 'debug me: 4242'" in logs


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ({"ARK_WORKER__MAX_JOBZ": "1"}, "did you mean ARK_WORKER__MAX_JOBS?"),
        ({"ARK_REDIS__URL": "http://localhost:6379"}, "redis.url: Value error, a Redis URL starts with"),
    ],
)
def test_arq_started_with_a_bad_setting_says_one_line_and_exits_2(setting: dict[str, str], says: str) -> None:
    ran = subprocess.run(
        [str(BIN / "arq"), "worker.WorkerSettings"],
        env={**os.environ, **setting},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 2 and "Traceback" not in ran.stderr, ran.stderr
    assert ran.stderr.startswith("arkq: ") and says in ran.stderr


def test_a_variable_meant_for_other_software_gets_a_note(redis_url: str) -> None:
    ran = subprocess.run(
        [str(BIN / "arkq"), "result", "no-such-job"],
        env={**without_redis_url(ark_env(redis_url, "http://127.0.0.1:9/v1")), "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "arkq: note: REDIS_URL is set, but arkq does not read it: set ARK_REDIS__URL" in ran.stderr


def without_redis_url(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != "ARK_REDIS__URL"}
