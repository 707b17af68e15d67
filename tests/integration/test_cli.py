"""The `arkq` commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from producer import Producer
from tests.servers import BIN, WorkerFleet, ark_env


def arkq(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "arkq"), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_submit_streams_the_reply_and_result_prints_it(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    env = ark_env(redis_url, fake_llm)
    submitted = arkq(env, "submit", "Tell me a story.", "--system", "Be brief.", "--max-tokens", "12")
    assert submitted.returncode == 15, submitted.stderr  # the answer was cut at --max-tokens
    job_id = submitted.stderr.split("job ", 1)[1].split()[0]

    result = arkq(env, "result", job_id)
    assert result.returncode == 15, result.stderr
    stored = json.loads(result.stdout)
    assert stored["status"] == "done"
    assert stored["finish_reason"] == "length"
    assert stored["usage"]["completion_tokens"] == 12
    assert submitted.stdout == stored["text"] + "\n"

    watched = arkq(env, "watch", job_id)
    assert watched.returncode == 15 and watched.stdout == submitted.stdout


def test_submit_json_prints_events_as_json_lines(fleet: WorkerFleet, redis_url: str, fake_llm: str) -> None:
    fleet.start(1)
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", "hello", "--json")
    assert submitted.returncode == 0, submitted.stderr
    events = [json.loads(line) for line in submitted.stdout.splitlines()]
    assert [event["seq"] for event in events] == list(range(len(events)))
    assert events[0]["type"] == "started" and events[-1]["type"] == "done"
    assert "".join(e["text"] for e in events if e["type"] == "token") == events[-1]["text"]


def test_submit_with_a_schema_file(fleet: WorkerFleet, redis_url: str, fake_llm: str, tmp_path: Path) -> None:
    fleet.start(1)
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    (tmp_path / "place.json").write_text(json.dumps(schema))
    submitted = arkq(
        ark_env(redis_url, fake_llm), "submit", "Where?", "--schema", str(tmp_path / "place.json")
    )
    assert submitted.returncode == 0, submitted.stderr
    assert isinstance(json.loads(submitted.stdout)["city"], str)


def test_a_failed_job_exits_non_zero_with_the_error(
    fleet: WorkerFleet, redis_url: str, fake_llm: str
) -> None:
    fleet.start(1)
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", "no [[arkq:status=400]]")
    assert submitted.returncode == 1
    assert "bad_request" in submitted.stderr


def test_a_bad_request_exits_with_usage_error_naming_the_field(redis_url: str, fake_llm: str) -> None:
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", "hi", "--temperature", "7")
    assert submitted.returncode == 2
    assert "temperature" in submitted.stderr


def test_watching_an_unknown_job_says_so(redis_url: str, fake_llm: str) -> None:
    watched = arkq(ark_env(redis_url, fake_llm), "watch", "no-such-job")
    assert watched.returncode == 3
    assert "no job" in watched.stderr


def test_demo_runs_the_whole_pipeline_with_nothing_installed() -> None:
    demo = arkq({"PATH": "/usr/bin:/bin"}, "demo", "Hello there", "--itl-ms", "0")
    assert demo.returncode == 0, demo.stderr
    assert "[done: stop" in demo.stdout


async def test_arkq_worker_runs_jobs_like_arq_does(redis_url: str, fake_llm: str) -> None:
    async with Producer(redis_url) as producer:
        jobs = [await producer.enqueue([{"role": "user", "content": f"burst {i}"}]) for i in range(3)]
        worker = arkq(ark_env(redis_url, fake_llm), "worker", "--burst")
        assert worker.returncode == 0, worker.stdout + worker.stderr
        for job in jobs:
            assert (await job.result(timeout=1)).text


def test_submit_gives_up_waiting_after_its_timeout(redis_url: str, fake_llm: str) -> None:
    submitted = arkq(ark_env(redis_url, fake_llm), "submit", "nobody is working", "--timeout", "1.5")
    assert submitted.returncode == 4
    assert "arkq watch" in submitted.stderr


def test_a_bad_setting_stops_the_command_naming_it(redis_url: str, fake_llm: str) -> None:
    env = ark_env(redis_url, fake_llm, worker__max_jobz="3")
    for args in (["submit", "hi"], ["worker"]):
        run = arkq(env, *args)
        assert run.returncode == 2
        assert "ARK_WORKER__MAX_JOBZ" in run.stderr and "Traceback" not in run.stderr
