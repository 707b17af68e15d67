"""Seeing the fleet: `arkq status` from Redis alone, the workers' and the gateway's `/metrics`, and JSON
log lines that find a job across processes. Real redis-server, workers, gateway and emulator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis

from arkq.errors import JobFailed
from producer import Producer
from tests.servers import BIN, WorkerFleet, ark_env, free_port, start_gateway, start_redis
from tests.waiting import until, wait_until

QUEUE = "arq:queue"
SLOW = "A long answer. [[arkq:tokens=300 itl_ms=20]]"


def arkq(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "arkq"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or dict(os.environ),
    )


def status_json(redis_url: str) -> dict[str, Any]:
    done = arkq("status", "--json", "--redis-url", redis_url)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def scrape(url: str) -> dict[str, float]:
    """Prometheus's text format, as {'name{labels}': value} (comments and `_created` samples left out)."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_status_of_a_queue_of_100000_jobs_reads_a_handful_of_keys(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    now_ms = int(time.time() * 1000)
    for start in range(0, 100_000, 10_000):
        client.zadd(QUEUE, {f"job-{i}": now_ms - 1000 for i in range(start, start + 10_000)})
    client.zadd(QUEUE, {f"later-{i}": now_ms + 3_600_000 for i in range(25)})
    client.config_resetstat()

    found = status_json(redis_url)

    assert (found["queued"], found["deferred"], found["running"]) == (100_000, 25, 0)
    stats = client.info("commandstats")
    used = {name.removeprefix("cmdstat_"): figures["calls"] for name, figures in stats.items()}
    data_commands = {
        name for name in used if not name.startswith(("client", "hello", "ping", "info", "config"))
    }
    assert data_commands <= {"time", "zcount", "hgetall", "lrange", "hdel"}, used
    assert used.get("zcount") == 2 and sum(used.values()) < 15, used


async def test_status_shows_each_workers_running_jobs_and_the_failures_by_kind(
    redis_url: str, fleet: WorkerFleet
) -> None:
    fleet.env.update(ARK_WORKER__HEARTBEAT_S="0.3", ARK_WORKER__SHUTDOWN_GRACE_S="0")
    fleet.start(2)
    async with Producer(redis_url) as producer:
        slow = [await producer.enqueue([{"role": "user", "content": SLOW}]) for _ in range(3)]
        bad = await producer.enqueue([{"role": "user", "content": "hi"}], max_tokens=10**9)
        await until(lambda: _settled(redis_url), 30, "three jobs running and one failure recorded")
        found = status_json(redis_url)
        assert found["workers_alive"] == 2
        assert {w["pid"] for w in found["workers"]} == {p.popen.pid for p in fleet.processes}
        assert sum(w["running"] for w in found["workers"]) == 3 == found["running"]
        assert found["queued"] == 0
        (failure,) = found["failures"]
        assert (failure["kind"], failure["count"], failure["last_job_id"]) == ("bad_request", 1, bad.id)

        screen = arkq("status", "--redis-url", redis_url)
        assert screen.returncode == 0 and "3 running" in screen.stdout and "bad_request" in screen.stdout
        for job in slow:
            await job.cancel()

    stopped, killed = fleet.processes
    stopped.stop()  # a clean stop takes the worker's record out
    os.kill(killed.popen.pid, signal.SIGKILL)  # a dead one's record stays, silent
    await until(lambda: _workers(redis_url) == {(killed.popen.pid, False)}, 15, "only the killed one, silent")


def _settled(redis_url: str) -> bool:
    found = status_json(redis_url)
    return found["running"] == 3 and bool(found["failures"])


def _workers(redis_url: str) -> set[tuple[int, bool]]:
    found = status_json(redis_url)
    now = found["at"]
    return {(w["pid"], now - w["seen_at"] <= 3 * w["interval_s"] + 1) for w in found["workers"]}


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_status_watch_refreshes_until_ctrl_c(redis_url: str, sigint: str) -> None:
    """Also when it starts with SIGINT ignored, as a command a script starts in the background does."""
    disposition = signal.SIG_IGN if sigint == "ignored" else signal.SIG_DFL
    watching = subprocess.Popen(
        [str(BIN / "arkq"), "status", "--watch", "0.2", "--json", "--redis-url", redis_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, disposition),
    )
    assert watching.stdout is not None
    readings = [json.loads(watching.stdout.readline()) for _ in range(3)]
    assert readings[0]["at"] < readings[1]["at"] < readings[2]["at"]
    watching.send_signal(signal.SIGINT)
    _, errors = watching.communicate(timeout=10)
    assert watching.returncode == 0 and "Traceback" not in errors


def test_a_metrics_port_in_use_stops_the_worker_with_one_line(
    redis_url: str, fake_llm: str, log_dir: Path
) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    env = ark_env(redis_url, fake_llm, worker__metrics_port=str(port), worker__metrics_host="127.0.0.1")
    try:
        done = subprocess.run(
            [str(BIN / "arq"), "worker.WorkerSettings"], capture_output=True, text=True, timeout=60, env=env
        )
    finally:
        taken.close()
    assert done.returncode == 2
    output = done.stdout + done.stderr
    assert f"worker.metrics_port: cannot listen on 127.0.0.1:{port}" in output
    assert "Traceback" not in output


async def test_worker_metrics_count_what_the_jobs_did(redis_url: str, fleet: WorkerFleet) -> None:
    port = free_port()
    fleet.env.update(ARK_WORKER__METRICS_PORT=str(port), ARK_WORKER__HEARTBEAT_S="0.3")
    fleet.start(1)
    url = f"http://127.0.0.1:{port}/metrics"
    async with Producer(redis_url) as producer:
        done = [
            await producer.enqueue([{"role": "user", "content": f"hi {i} [[arkq:tokens=7]]"}])
            for i in range(4)
        ]
        failed = await producer.enqueue([{"role": "user", "content": "hi"}], max_tokens=10**9)
        results = [await job.result(timeout=30) for job in done]
        with pytest.raises(JobFailed):
            await failed.result(timeout=30)
    completion = sum(result.usage["completion_tokens"] for result in results if result.usage)
    prompt = sum(result.usage["prompt_tokens"] for result in results if result.usage)
    model = 'model_name="tgi"'
    found = scrape(url)
    assert found[f'arkq_jobs_total{{kind="",{model},outcome="done"}}'] == 4
    assert found[f'arkq_jobs_total{{kind="bad_request",{model},outcome="error"}}'] == 1
    assert found[f"arkq_generation_tokens_total{{{model}}}"] == completion == 28
    assert found[f"arkq_prompt_tokens_total{{{model}}}"] == prompt
    assert found[f"arkq_queue_time_seconds_count{{{model}}}"] == 5
    assert found[f"arkq_time_to_first_token_seconds_count{{{model}}}"] == 4
    assert found[f"arkq_e2e_request_latency_seconds_count{{{model}}}"] == 5
    assert found[f'arkq_attempts_total{{{model},reason="first"}}'] == 5
    assert found[f'arkq_llm_requests_total{{{model},status="ok"}}'] == 4
    assert found[f'arkq_llm_requests_total{{{model},status="bad_request"}}'] == 1
    wait_until(lambda: scrape(url)[f"arkq_workers_alive{{{model}}}"] == 1, 10, "the fleet gauge")


def test_gateway_metrics_count_routes_not_paths_and_open_streams(
    redis_url: str, fake_llm: str, fleet: WorkerFleet, log_dir: Path
) -> None:
    fleet.start(1)
    process, url = start_gateway(log_dir, ark_env(redis_url, fake_llm))
    try:
        with httpx2.Client(base_url=url, timeout=30) as http:
            body = {"messages": [{"role": "user", "content": SLOW}]}
            job = http.post("/v1/jobs", json=body).json()
            events = "/v1/jobs/{job_id}/events"
            with http.stream("GET", job["events_url"]) as stream:
                lines = stream.iter_lines()  # kept: a dropped iterator closes the stream
                next(lines)
                assert scrape(url + "/metrics")[f'arkq_sse_streams_open{{route="{events}"}}'] == 1
            http.post(f"/v1/jobs/{job['id']}/cancel")
            http.get(f"/v1/jobs/{job['id']}")
            http.get("/v1/jobs/no-such-job")
            http.get("/nowhere")
            text = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        found = scrape(url + "/metrics")
        assert found[f'arkq_sse_streams_open{{route="{events}"}}'] == 0
        assert found['arkq_http_requests_total{method="POST",route="/v1/jobs",status="202"}'] == 1
        assert found['arkq_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="200"}'] == 1
        assert found['arkq_http_requests_total{method="GET",route="/v1/jobs/{job_id}",status="404"}'] == 1
        assert found['arkq_http_requests_total{method="GET",route="other",status="404"}'] == 1
        assert found['arkq_http_request_duration_seconds_count{method="GET",route="' + events + '"}'] == 1
        assert job["id"] not in text  # job IDs are never label values
        assert found['arkq_workers_alive{model_name="tgi"}'] == 1
    finally:
        process.stop()


def test_one_grep_finds_a_jobs_life_in_the_gateways_and_the_workers_json_logs(
    redis_url: str, fake_llm: str, fleet: WorkerFleet, log_dir: Path
) -> None:
    fleet.env.update(ARK_WORKER__LOG_FORMAT="json")
    fleet.start(1)
    env = ark_env(redis_url, fake_llm, gateway__log_format="json")
    process, url = start_gateway(log_dir, env)
    try:
        with httpx2.Client(base_url=url, timeout=30) as http:
            answer = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        job_id = answer.headers["x-arkq-job-id"]
    finally:
        process.stop()
    fleet.stop()
    logs = process.log().splitlines() + fleet.processes[0].log().splitlines()
    mine = [json.loads(line) for line in logs if job_id in line]
    assert all(line["job_id"] == job_id for line in mine), mine
    events = [line.get("event") for line in mine]
    assert events[0] == "enqueued" and {"arq_job_start", "job_ended", "arq_job_end"} <= set(events), events
    ended = next(line for line in mine if line.get("event") == "job_ended")
    assert (
        ended["status"] == "done"
        and ended["attempt"] == 1
        and ended["worker"].endswith(f":{fleet.processes[0].popen.pid}")
    )
    assert (
        ended["queued_s"] >= 0
        and ended["ttft_s"] >= 0
        and ended["queued_s"] + ended["ttft_s"] <= ended["total_s"]
    )
    for line in fleet.processes[0].log().splitlines():
        json.loads(line)  # every worker line is JSON, arq's own included


def test_a_silent_redis_gets_a_503_from_status_drops_the_fleet_gauges_and_does_not_end_a_watch(
    fake_llm: str, tmp_path: Path
) -> None:
    server, redis_url = start_redis(tmp_path)
    env = ark_env(redis_url, fake_llm, redis__connect_timeout_s="1")
    process, url = start_gateway(tmp_path, env)
    watching = subprocess.Popen(
        [str(BIN / "arkq"), "status", "--watch", "0.3", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert watching.stdout is not None
    try:
        assert "error" not in json.loads(watching.stdout.readline())
        assert 'arkq_num_queue_reqs{model_name="tgi"}' in scrape(url + "/metrics")
        server.popen.send_signal(signal.SIGSTOP)  # Redis stops answering, its connections stay open
        try:
            with httpx2.Client(base_url=url, timeout=30) as http:
                began = time.monotonic()
                answer = http.get("/v1/status")
                took = time.monotonic() - began
            assert answer.status_code == 503 and answer.json()["error"]["code"] == "redis_unavailable"
            assert took < 10
            assert 'arkq_num_queue_reqs{model_name="tgi"}' not in scrape(url + "/metrics")
            wait_until(lambda: "error" in json.loads(watching.stdout.readline()), 30, "the watch to say so")
        finally:
            server.popen.send_signal(signal.SIGCONT)
        wait_until(lambda: "error" not in json.loads(watching.stdout.readline()), 30, "the watch to recover")
        watching.send_signal(signal.SIGINT)
        _, errors = watching.communicate(timeout=10)
        assert watching.returncode == 0 and "Traceback" not in errors
    finally:
        if watching.poll() is None:
            watching.kill()
        process.stop()
        server.stop()
