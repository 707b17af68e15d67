"""The stack the compose file describes, run as local processes: the emulator with the `fake-llm`
service's arguments, workers with the `worker` service's environment (only the Redis and LLM addresses
changed to the test's), and the services' healthcheck and llm-check commands as compose runs them.
`docker compose --profile cpu up --scale worker=4` without Docker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from producer import Producer
from tests.deploy.helpers import compose_config, flag, process_env
from tests.servers import BIN, Process, WorkerFleet, free_port, start_fake_llm, worker_pid

API_KEY = "sk-deploy-test"
#: What compose would read from .env for these tests: a key on the server, and few jobs per worker so
#: that no worker can take all of them.
COMPOSE_ENV = {"LLM_API_KEY": API_KEY, "ARK_WORKER__MAX_JOBS": "10"}
SLOW = "[[arkq:tokens=40 itl_ms=25]]"  # about a second per job: the jobs overlap


def compose_services(**env: str) -> dict[str, Any]:
    return compose_config("cpu", env={**COMPOSE_ENV, **env})["services"]


def without(argv: Sequence[str], *flags: str) -> list[str]:
    """`argv` without the given flags and their values."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        else:
            out.append(arg)
    return out


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`arkq fake-llm` with the compose service's arguments, on a free local port instead of 30000."""
    command = compose_services()["fake-llm"]["command"]
    assert command[:2] == ["arkq", "fake-llm"] and flag(command, "--api-key") == API_KEY
    process, base_url = start_fake_llm(
        tmp_path_factory.mktemp("fake-llm"), *without(command[2:], "--host", "--port")
    )
    yield base_url, int(base_url.rsplit(":", 1)[1].split("/")[0])
    process.stop()


def worker_env(service: str, redis_url: str, base_url: str, **compose_env: str) -> dict[str, str]:
    """The service's environment from the compose model, pointed at the test's Redis and emulator. Without
    the metrics port: each container has one of its own, processes on one host would share it
    (tests/deploy/test_monitoring.py starts a worker with it)."""
    ark = dict(compose_services(**compose_env)[service]["environment"])
    ark.pop("ARK_WORKER__METRICS_PORT", None)
    return process_env(ark, ARK_REDIS__URL=redis_url, ARK_LLM__BASE_URL=base_url)


def run_check(argv: Sequence[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A compose `command`/`test` run here: `python`/`python3` is this interpreter, other commands come
    from this environment's bin directory."""
    program = sys.executable if argv[0] in {"python", "python3"} else str(BIN / argv[0])
    return subprocess.run(
        [program, *argv[1:]], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[list[WorkerFleet]]:
    fleets: list[WorkerFleet] = []
    yield fleets
    for each in fleets:
        each.stop()


async def started_by(producer: Producer, job_id: str) -> int:
    """The process ID of the worker that started the job's (first) attempt."""
    async for event in producer.job(job_id).events():
        if event.type == "started":
            return worker_pid(event.worker)
    raise AssertionError(f"job {job_id} never started")


async def test_scale_worker_4_shares_the_jobs(
    redis_url: str, emulator: tuple[str, int], producer: Producer, fleet: list[WorkerFleet], tmp_path: Path
) -> None:
    env = worker_env("worker", redis_url, emulator[0])
    assert env["ARK_WORKER__MAX_JOBS"] == "10" and env["ARK_LLM__API_KEY"] == API_KEY
    workers = WorkerFleet(tmp_path, env)
    fleet.append(workers)
    workers.start(4)

    jobs = await asyncio.gather(
        *(producer.enqueue([{"role": "user", "content": f"Job {i}. {SLOW}"}]) for i in range(40))
    )
    results = await asyncio.wait_for(asyncio.gather(*(job.result(timeout=60) for job in jobs)), 60)
    assert all(r.finish_reason == "stop" and r.text and r.error is None for r in results), workers.logs()

    taken = Counter(await asyncio.gather(*(started_by(producer, job.id) for job in jobs)))
    assert set(taken) == {p.popen.pid for p in workers.processes}, f"jobs per worker: {taken}"
    assert sum(taken.values()) == 40

    # The worker service's healthcheck, as Docker runs it in each container.
    health = compose_services()["worker"]["healthcheck"]["test"]
    assert health[0] == "CMD"
    done = await asyncio.to_thread(run_check, health[1:], env)
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = {**env, "ARK_REDIS__URL": redis_url.rsplit("/", 1)[0] + "/5"}  # no worker there
    assert (await asyncio.to_thread(run_check, health[1:], elsewhere)).returncode == 1


async def test_docker_stop_leaves_the_worker_its_grace_and_the_job_moves_on(
    redis_url: str, emulator: tuple[str, int], producer: Producer, fleet: list[WorkerFleet], tmp_path: Path
) -> None:
    """`docker stop`: SIGTERM, then SIGKILL after stop_grace_period. The worker must be gone before that,
    its running job handed back and finished by another worker."""
    grace = "1"
    service = compose_services(ARK_WORKER__SHUTDOWN_GRACE_S=grace)["worker"]
    stop_grace_s = float(service["stop_grace_period"].removesuffix("s"))
    env = worker_env("worker", redis_url, emulator[0], ARK_WORKER__SHUTDOWN_GRACE_S=grace)
    workers = WorkerFleet(tmp_path, env)
    fleet.append(workers)
    workers.start(2)

    job = await producer.enqueue([{"role": "user", "content": "long [[arkq:tokens=120 itl_ms=25]]"}])
    pid = await asyncio.wait_for(started_by(producer, job.id), 15)
    stopped: Process = workers.by_pid(pid)
    began = time.monotonic()
    stopped.popen.send_signal(signal.SIGTERM)
    await asyncio.to_thread(stopped.popen.wait, stop_grace_s)  # raises TimeoutExpired if Docker would kill
    took = time.monotonic() - began
    assert float(grace) <= took < stop_grace_s, stopped.log()

    result = await job.result(timeout=30)
    assert result.finish_reason == "stop", workers.logs()
    events = [event async for event in producer.job(job.id).events()]
    attempts = [event.worker for event in events if event.type == "started"]
    assert len(attempts) == 2 and worker_pid(attempts[-1]) != pid


# -- the healthcheck and llm-check commands -------------------------------------------------------------


@pytest.mark.parametrize("service", ["fake-llm", "sglang"])
def test_llm_healthchecks_answer_on_a_running_server(service: str, emulator: tuple[str, int]) -> None:
    """Both LLM services probe /health, which SGLang (and the emulator) leave open without the key."""
    test = compose_config("*", env=COMPOSE_ENV)["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[1] in {"python", "python3"}
    port = emulator[1]
    probe = [*test[1:-1], test[-1].replace("127.0.0.1:30000", f"127.0.0.1:{port}")]
    assert probe != test[1:], "the probe names the service's port"
    assert run_check(probe, {}).returncode == 0
    closed = [*test[1:-1], test[-1].replace("127.0.0.1:30000", f"127.0.0.1:{free_port()}")]
    assert run_check(closed, {}).returncode != 0


def llm_check(
    emulator_url: str, timeout_s: str = "5", **environment: str
) -> subprocess.CompletedProcess[str]:
    service = compose_services()["llm-check"]
    command = service["command"]
    assert command[:3] == ["arkq", "check-llm", "--wait"] and command[-1] == "60"
    env = {**service["environment"], "ARK_LLM__BASE_URL": emulator_url, **environment}
    return run_check([*command[:-1], timeout_s], env)


def test_llm_check_passes_when_the_server_answers(emulator: tuple[str, int]) -> None:
    done = llm_check(emulator[0])
    assert done.returncode == 0, done.stderr
    assert "serves ['Qwen/Qwen2.5-7B-Instruct']" in done.stdout and "warning" not in done.stdout
    renamed = llm_check(emulator[0], ARK_LLM__MODEL_NAME="other")
    assert renamed.returncode == 0 and "warning: ARK_LLM__MODEL_NAME='other'" in renamed.stdout


def test_llm_check_explains_a_missing_server_or_a_wrong_key(emulator: tuple[str, int]) -> None:
    nobody = llm_check(f"http://127.0.0.1:{free_port()}/v1", timeout_s="0")
    assert nobody.returncode == 7
    assert "no LLM server answers" in nobody.stderr and "--profile cpu" in nobody.stderr
    # No profile and no ARK_LLM__BASE_URL: the default URL's host `llm` does not exist. No waiting.
    began = time.monotonic()
    no_profile = llm_check(compose_services()["worker"]["environment"]["ARK_LLM__BASE_URL"], timeout_s="60")
    assert no_profile.returncode == 7 and "no LLM server answers at http://llm:30000/v1" in no_profile.stderr
    assert time.monotonic() - began < 30
    wrong_key = llm_check(emulator[0], ARK_LLM__API_KEY="wrong")
    assert wrong_key.returncode == 2 and "refused the API key" in wrong_key.stderr
