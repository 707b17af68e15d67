"""arkq behind SGLang's own router (`sglang-router` from PyPI, the real Rust binary, on CPU), in front of
two emulators: the router registers each as a worker serving the emulator's model (from what the
emulator answers at `/server_info`), and arkq's jobs run through it end to end."""

import json
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from producer import Producer
from tests.servers import (
    Process,
    WorkerFleet,
    ark_env,
    free_port,
    start,
    start_fake_llm,
    wait_serving,
    wait_until,
)


def _get_json(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.loads(answer.read())


def _workers(port: int) -> list[dict[str, object]]:
    """The router's registered workers (its `GET /workers`)."""
    found = _get_json(f"http://127.0.0.1:{port}/workers")
    assert isinstance(found, dict)
    workers: list[dict[str, object]] = found["workers"]
    return workers


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """Two emulators behind one router: the router's base URL (`.../v1`), and the emulators' URLs."""
    log_dir = tmp_path_factory.mktemp("router")
    emulators = [start_fake_llm(log_dir, "--itl-ms", "1") for _ in range(2)]
    worker_urls = [base_url.removesuffix("/v1") for _, base_url in emulators]
    port = free_port()
    argv = [sys.executable, "-m", "sglang_router.launch_router", "--worker-urls", *worker_urls]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--policy", "round_robin"]
    # It always serves Prometheus (default 0.0.0.0:29000, and panics if that is taken): a free port.
    argv += ["--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port())]
    router: Process = start(f"sglang-router-{port}", argv, log_dir)
    try:
        wait_serving(router, port, "sglang-router", 30)
        # Workers are registered by a workflow of their own, after the router listens.
        wait_until(lambda: len(_workers(port)) == 2, 30, "the router's two workers")
        yield f"http://127.0.0.1:{port}/v1", worker_urls
    finally:
        router.stop()
        for process, _ in emulators:
            process.stop()


def test_the_router_registers_each_emulator_as_a_worker_of_its_model(routed: tuple[str, list[str]]) -> None:
    base_url, worker_urls = routed
    port = int(base_url.removesuffix("/v1").rsplit(":", 1)[1])
    registered = {worker["url"]: worker for worker in _workers(port)}
    assert set(registered) == set(worker_urls)
    assert {worker["model_id"] for worker in registered.values()} == {"tgi"}, "from served_model_name"
    assert all(worker["is_healthy"] for worker in registered.values())


async def test_the_openai_client_streams_through_the_router(routed: tuple[str, list[str]]) -> None:
    base_url, _ = routed
    async with openai.AsyncOpenAI(base_url=base_url, api_key="-", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="tgi", messages=[{"role": "user", "content": "hello"}], max_tokens=8, stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert len(text.split()) == 8


async def test_jobs_run_through_the_router_on_every_emulator(
    routed: tuple[str, list[str]], redis_url: str, tmp_path: Path
) -> None:
    base_url, worker_urls = routed
    fleet = WorkerFleet(tmp_path, ark_env(redis_url, base_url))
    fleet.start(1)
    try:
        async with Producer(redis_url) as producer:
            jobs = [
                await producer.enqueue([{"role": "user", "content": f"question {n}"}], max_tokens=5)
                for n in range(4)
            ]
            results = [await job.result(timeout=30) for job in jobs]
    finally:
        fleet.stop()
    assert [result.status for result in results] == ["done"] * 4
    assert all(len(result.text.split()) == 5 for result in results)
    # Round robin: each emulator served some of them.
    served = [_get_json(url + "/stats") for url in worker_urls]
    assert all(isinstance(stats, dict) and stats["requests"] >= 1 for stats in served), served
