"""Integration fixtures: a real redis-server, `arkq fake-llm` and `arq worker.WorkerSettings` processes."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from producer import Producer
from tests.servers import PersistentRedis, WorkerFleet, ark_env, start_fake_llm


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.stash[FAILED] = report.failed


FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="session")
def fake_llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The emulator as a user runs it; a little inter-token latency so streams interleave."""
    process, base_url = start_fake_llm(tmp_path_factory.mktemp("fake-llm"), "--itl-ms", "2")
    yield base_url
    process.stop()


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("workers")


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, redis_url: str, fake_llm: str, log_dir: Path
) -> Iterator[WorkerFleet]:
    """Worker processes for one test; call `fleet.start(n)`. Their logs are shown when the test fails."""
    workers = WorkerFleet(log_dir / request.node.name[:60], ark_env(redis_url, fake_llm))
    workers.log_dir.mkdir(parents=True, exist_ok=True)
    yield workers
    workers.stop()
    if request.node.stash.get(FAILED, False):
        print(workers.logs())


@pytest.fixture
async def producer(redis_url: str) -> AsyncIterator[Producer]:
    async with Producer(redis_url) as opened:
        yield opened


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[PersistentRedis]:
    """A redis-server with AOF persistence that a test may restart on the same port and files."""
    server = PersistentRedis(tmp_path)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium (`apt-get install chromium`, as CI does): Playwright cannot download one here."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is not installed: `apt-get install chromium` (CI installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()
