"""A real Prometheus scrapes a real stack (a worker, a gateway, the SGLang emulator) while jobs run
through it, done and failed; what Prometheus then answers over its HTTP API is exactly what the jobs
did, and every query of the Grafana dashboard finds its series."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis.asyncio
import yaml

from arkq.envelope import encode_job
from producer import JobFailed, Producer
from tests.servers import (
    Process,
    WorkerFleet,
    ark_env,
    free_port,
    start,
    start_fake_llm,
    start_gateway,
    wait_until,
)
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "arkq.json"
#: Grafana's variables, as Grafana replaces them before a query reaches Prometheus (1 s scrapes here).
GRAFANA_VARIABLES = {"$__rate_interval": "10s", "$__interval": "1s", "$__range": "5m", "$model": ".*"}
#: Dashboard queries with no series after this test's jobs: nothing took a lease over.
NOTHING_TO_SHOW = ("arkq_lease_takeovers_total",)


@dataclass
class Prometheus:
    url: str
    process: Process

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector (`/api/v1/query`)."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        assert answer["data"]["resultType"] == "vector", answer
        found: list[dict[str, Any]] = answer["data"]["result"]
        return found

    def by(self, promql: str, label: str) -> dict[str, float]:
        """{label value: value} of a query's series."""
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(promql)}

    def value(self, promql: str) -> float | None:
        """The one value of a query that yields one series (None when it yields none)."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql}: {result}"
        return float(result[0]["value"][1]) if result else None


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("prometheus is not installed: `apt-get install prometheus` (CI does this: .ci/run)")
    return found


@pytest.fixture
def stack(redis_url: str, tmp_path: Path) -> Iterator[tuple[Prometheus, WorkerFleet, str]]:
    """The emulator, one worker with its /metrics port, a gateway, and Prometheus scraping the three
    every second under the job names of monitoring/prometheus.yml."""
    binary = prometheus_binary()
    emulator, llm_url = start_fake_llm(tmp_path, "--itl-ms", "1")
    worker_port = free_port()
    env = ark_env(
        redis_url,
        llm_url,
        worker__metrics_port=str(worker_port),
        worker__metrics_host="127.0.0.1",
        worker__heartbeat_s="0.3",
    )
    fleet = WorkerFleet(tmp_path, env)
    processes: list[Process] = [emulator]
    try:
        fleet.start(1)
        gateway, gateway_url = start_gateway(tmp_path, ark_env(redis_url, llm_url))
        processes.append(gateway)
        targets = {
            "arkq-worker": f"127.0.0.1:{worker_port}",
            "arkq-gateway": gateway_url.removeprefix("http://"),
            "sglang": llm_url.removeprefix("http://").removesuffix("/v1"),
        }
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [address]}]}
                for job, address in targets.items()
            ],
        }
        config_path = tmp_path / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        argv = [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ]
        server = start("prometheus", argv, tmp_path)
        processes.append(server)
        prometheus = Prometheus(f"http://127.0.0.1:{port}", server)

        def ready() -> bool:
            if server.popen.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{server.log()}")
            try:
                with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_until(ready, 30, "prometheus")
        everyone_up = dict.fromkeys(targets, 1.0)
        wait_until(lambda: prometheus.by("up", "job") == everyone_up, 30, "all three targets up")
        yield prometheus, fleet, gateway_url
    finally:
        for process in reversed(processes):
            process.stop()
        fleet.stop()


async def settled(check: Callable[[], object], expected: object, what: str, timeout: float = 30) -> None:
    """Until `check()` equals `expected` (Prometheus scrapes every second); then assert it, so that a
    mismatch says what Prometheus has."""
    found: list[object] = []

    async def matches() -> bool:
        found.append(await asyncio.to_thread(check))
        return found[-1] == expected

    with contextlib.suppress(TimeoutError):
        await until(matches, timeout, what, interval=0.25)
    assert found[-1] == expected, f"{what}: Prometheus has {found[-1]!r}, the jobs did {expected!r}"


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", ()):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


async def test_prometheus_counts_exactly_what_the_jobs_did(
    stack: tuple[Prometheus, WorkerFleet, str], redis_url: str, aredis: redis.asyncio.Redis
) -> None:
    prometheus, fleet, gateway_url = stack
    async with Producer(redis_url) as producer:
        done = [
            await producer.enqueue([{"role": "user", "content": f"Job {i}. [[arkq:tokens={5 + i}]]"}])
            for i in range(3)
        ]
        refused = await producer.enqueue([{"role": "user", "content": "No. [[arkq:status=400]]"}])
        # Past the producer's validation, as a buggy client could write it: the worker fails it alone.
        now_ms = int(time.time() * 1000)
        await aredis.set("arq:job:not-a-request", encode_job({"messages": "hello"}, enqueued_ms=now_ms))
        await aredis.zadd("arq:queue", {"not-a-request": now_ms})

        body = {"messages": [{"role": "user", "content": "Through HTTP. [[arkq:tokens=4]]"}]}
        async with httpx2.AsyncClient(base_url=gateway_url, timeout=30) as http:
            plain = await http.post("/v1/chat/completions", json=body)
            async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
                assert stream.status_code == 200
                streamed_id = stream.headers["x-arkq-job-id"]
                _ = [line async for line in stream.aiter_lines()]
        assert plain.status_code == 200, plain.text
        via_http = [producer.job(plain.headers["x-arkq-job-id"]), producer.job(streamed_id)]

        results = [await job.result(timeout=30) for job in [*done, *via_http]]
        for failed in (refused, producer.job("not-a-request")):
            with pytest.raises(JobFailed):
                await failed.result(timeout=30)
    assert all(result.finish_reason == "stop" for result in results), fleet.logs()
    completion = sum(result.usage["completion_tokens"] for result in results if result.usage)
    prompt = sum(result.usage["prompt_tokens"] for result in results if result.usage)
    assert completion == 5 + 6 + 7 + 4 + 4

    p = prometheus
    await settled(
        lambda: p.by("sum by (outcome) (arkq_jobs_total)", "outcome"),
        {"done": 5, "error": 2},
        "jobs by outcome",
    )
    await settled(
        lambda: p.by('sum by (kind) (arkq_jobs_total{outcome="error"})', "kind"),
        {"bad_request": 1, "invalid_job": 1},
        "failed jobs by kind",
    )
    # The worker's and SGLang's counts of the same requests, under the same model_name label.
    await settled(
        lambda: p.by("sum by (model_name) (arkq_generation_tokens_total)", "model_name"),
        {"tgi": completion},
        "arkq's generated tokens",
    )
    await settled(
        lambda: p.by("sum by (model_name) (sglang:generation_tokens_total)", "model_name"),
        {"tgi": completion},
        "SGLang's generated tokens",
    )
    await settled(lambda: p.value("sum(arkq_prompt_tokens_total)"), prompt, "arkq's prompt tokens")
    await settled(lambda: p.value("sum(sglang:prompt_tokens_total)"), prompt, "SGLang's prompt tokens")
    await settled(lambda: p.value("sum(arkq_time_to_first_token_seconds_count)"), 5, "arkq's first tokens")
    await settled(lambda: p.value("sum(sglang:time_to_first_token_seconds_count)"), 5, "SGLang's first")
    await settled(
        lambda: p.by("sum by (status) (arkq_llm_requests_total)", "status"),
        {"ok": 5, "bad_request": 1},
        "LLM requests by status",
    )
    chat = 'arkq_http_requests_total{route="/v1/chat/completions"}'
    await settled(
        lambda: p.by(f"sum by (method, status) ({chat})", "status"), {"200": 2}, "the gateway's chat answers"
    )
    await settled(lambda: p.by(f"sum by (method) ({chat})", "method"), {"POST": 2}, "chat requests")
    await settled(lambda: p.value("max(arkq_workers_alive)"), 1, "workers alive")
    idle = "max(arkq_num_running_reqs) + max(arkq_num_queue_reqs)"
    await settled(lambda: p.value(idle), 0, "an idle queue")


async def test_every_dashboard_query_finds_its_series(
    stack: tuple[Prometheus, WorkerFleet, str], redis_url: str
) -> None:
    prometheus, _, gateway_url = stack
    async with Producer(redis_url) as producer:
        jobs = [await producer.enqueue([{"role": "user", "content": f"Job {i}."}]) for i in range(3)]
        for job in jobs:
            await job.result(timeout=30)
        refused = await producer.enqueue([{"role": "user", "content": "No. [[arkq:status=400]]"}])
        with pytest.raises(JobFailed):
            await refused.result(timeout=30)
    async with httpx2.AsyncClient(base_url=gateway_url, timeout=30) as http:
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            _ = [line async for line in stream.aiter_lines()]

    queries = [(t, e) for t, e in dashboard_queries() if not any(name in e for name in NOTHING_TO_SHOW)]
    empty: list[str] = []

    def nothing_is_empty() -> bool:  # a rate needs two scrapes after its counter appeared
        empty[:] = [f"{title}: {expr}" for title, expr in queries if not prometheus.query(expr)]
        return not empty

    with contextlib.suppress(TimeoutError):
        await until(lambda: asyncio.to_thread(nothing_is_empty), 30, "every query finds a series", 0.5)
    assert not empty, "dashboard queries that find nothing:\n" + "\n".join(empty)
