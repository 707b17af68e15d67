"""The web console in a real browser (Debian's Chromium, driven by Playwright), against a real gateway
with keys, real workers and the SGLang emulator: sign-in, the queue view against Redis's own count, the
playground streaming a job to its end, through a reload and to a cancel, the job page, and no request
leaving the gateway's origin.

The pages forbid `eval` (their Content-Security-Policy), which Playwright's `wait_for_function` polls
with, so conditions on the page are polled from here (`page.evaluate`) with a deadline. Screenshots of
each step go to artifacts/console/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import redis
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, expect

from arkq.keys import failures_key, workers_key
from arkq.status import Failure, WorkerRecord
from config_module.settings import ArkConfig
from tests.servers import WorkerFleet, ark_env, start_gateway
from tests.waiting import wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts" / "console"
KEY = "sk-web"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUEUE = ArkConfig().queue.name
#: Long enough for every wait here on a busy 2-core machine; a passing test waits only as long as it takes.
WAIT_S = 60.0
#: What the pages show for a value not known (yet): an en dash.
NO_VALUE = "\u2013"


@pytest.fixture
def gateway(redis_url: str, fake_llm: str, log_dir: Path) -> Iterator[str]:
    """`arkq serve` with one key, `web`: its base URL."""
    env = ark_env(redis_url, fake_llm, gateway__api_keys=json.dumps({"web": KEY}))
    process, url = start_gateway(log_dir, env)
    yield url
    process.stop()


@dataclass
class Tab:
    """A browser tab of its own (its own sessionStorage), and every request it made."""

    page: Page
    requests: list[str] = field(default_factory=list)
    #: Script errors and console errors, but those of the requests a test makes fail on purpose.
    errors: list[str] = field(default_factory=list)

    def until(self, expression: str, what: str, timeout: float = WAIT_S) -> None:
        """Until `expression` is true on the page."""
        wait_until(lambda: bool(self.page.evaluate(expression)), timeout, what)

    def text(self, selector: str) -> str:
        return str(self.page.evaluate("s => document.querySelector(s).textContent", selector))

    def playground(self) -> dict[str, Any]:
        """The playground's job as the page keeps it."""
        kept: dict[str, Any] = json.loads(self.page.evaluate("sessionStorage.getItem('arkq.playground')"))
        return kept

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = Tab(context.new_page())

    def record(request: Request) -> None:
        opened.requests.append(request.url)

    def console_error(message: ConsoleMessage) -> None:
        # A refused key's 401 is logged by the browser as an error: that one is expected.
        if message.type == "error" and "status of 401" not in message.text:
            opened.errors.append(message.text)

    context.on("request", record)
    opened.page.on("console", console_error)
    opened.page.on("pageerror", lambda error: opened.errors.append(f"page error: {error}"))
    yield opened
    context.close()


def sign_in(tab: Tab, url: str, path: str = "/") -> None:
    tab.page.goto(f"{url}{path}")
    expect(tab.page.locator("#sign-in")).to_be_visible(timeout=WAIT_S * 1000)
    tab.page.fill("#key", KEY)
    tab.page.click("#sign-in button[type=submit]")
    expect(tab.page.locator("#app")).to_be_visible(timeout=WAIT_S * 1000)


def run_prompt(tab: Tab, prompt: str) -> None:
    tab.page.fill("#prompt", prompt)
    tab.page.click("#run")
    tab.until("JSON.parse(sessionStorage.getItem('arkq.playground') || '{}').id", "the job enqueued")


def status_is(status: str) -> str:
    return f"document.querySelector('#play-status').dataset.status === {json.dumps(status)}"


def get_job(url: str, job_id: str) -> dict[str, Any]:
    found: dict[str, Any] = httpx2.get(f"{url}/v1/jobs/{job_id}", headers=AUTH).json()
    return found


def ended_job(url: str, job_id: str) -> dict[str, Any]:
    """The job once the API says it has ended."""
    wait_until(
        lambda: get_job(url, job_id)["status"] in {"done", "error", "cancelled"}, WAIT_S, f"job {job_id} ends"
    )
    return get_job(url, job_id)


def test_without_a_key_only_the_sign_in_box_shows_and_a_wrong_key_is_refused(tab: Tab, gateway: str) -> None:
    page = tab.page
    page.goto(f"{gateway}/")
    expect(page.locator("#sign-in")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator("#app")).to_be_hidden()
    expect(page.locator("#bar")).to_be_hidden()
    tab.shot("sign-in")

    page.fill("#key", "sk-wrong")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in-message")).to_contain_text("refused", timeout=WAIT_S * 1000)
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('arkq.key')") is None
    tab.shot("sign-in-refused")

    page.fill("#key", KEY)
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator("#sign-in")).to_be_hidden()
    expect(page.locator("#queue-name")).to_have_text(QUEUE, timeout=WAIT_S * 1000)

    page.reload()  # the key is kept for the tab's session: no second sign-in
    expect(page.locator("#app")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator("#sign-in")).to_be_hidden()

    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible(timeout=WAIT_S * 1000)
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('arkq.key')") is None


def test_a_gateway_without_keys_needs_no_sign_in(
    tab: Tab, redis_url: str, fake_llm: str, log_dir: Path
) -> None:
    process, url = start_gateway(log_dir, ark_env(redis_url, fake_llm))
    try:
        tab.page.goto(f"{url}/")
        expect(tab.page.locator("#app")).to_be_visible(timeout=WAIT_S * 1000)
        expect(tab.page.locator("#queue-name")).to_have_text(QUEUE, timeout=WAIT_S * 1000)
        expect(tab.page.locator("#sign-in")).to_be_hidden()
        expect(tab.page.locator("#sign-out")).to_be_hidden()
        assert tab.page.evaluate("document.body.dataset.signedIn") == "open"
    finally:
        process.stop()


def test_the_queue_view_counts_what_redis_holds(tab: Tab, gateway: str, redis_url: str) -> None:
    """No worker runs: every job enqueued stays queued, and the page's count is Redis's own."""
    sign_in(tab, gateway)
    client = redis.Redis.from_url(redis_url)
    prompt = {"messages": [{"role": "user", "content": "Wait for me."}]}
    for _ in range(5):
        assert httpx2.post(f"{gateway}/v1/jobs", json=prompt, headers=AUTH).status_code == 202
    assert client.zcard(QUEUE) == 5
    tab.until("document.querySelector('#metric-queued output').textContent === '5'", "5 queued on the page")

    for _ in range(3):  # and it follows the queue as it changes
        httpx2.post(f"{gateway}/v1/jobs", json=prompt, headers=AUTH)
    assert client.zcard(QUEUE) == 8
    tab.until("document.querySelector('#metric-queued output').textContent === '8'", "8 queued on the page")

    # A worker's heartbeat record and two failures, as workers write them: the tables show them.
    now = time.time()
    record = WorkerRecord(
        name="box-1:4242", host="box-1", pid=4242, started_at=now - 125, seen_at=now, interval_s=60.0,
        model="tgi", running=0, max_jobs=64, jobs_ended=17, tokens=5120, tokens_per_s=42.5,
        queue_time_s=0.25,
    )  # fmt: skip
    client.hset(workers_key(QUEUE), record.name, record.model_dump_json())
    for index in range(2):
        failure = Failure(job_id=f"failed-{index}", kind="timeout", message="ran past 600 s", at=now - index)
        client.lpush(failures_key(QUEUE), failure.model_dump_json())
    tab.until(
        "document.querySelector('#workers tr[data-worker=\"box-1:4242\"]') !== null", "the worker's row"
    )
    tab.until(
        "document.querySelector('#metric-workers_alive output').textContent === '1'", "one worker alive"
    )
    assert tab.text("#metric-tokens_per_s output") == "42.5"
    row = tab.text('#workers tr[data-worker="box-1:4242"]')
    assert "tgi" in row and "0 / 64" in row and "5120" in row and "2 min" in row
    tab.until("document.querySelector('#failures tr[data-kind=\"timeout\"]') !== null", "the failures' row")
    failures = tab.text('#failures tr[data-kind="timeout"]')
    assert "2" in failures
    # With keys, the gateway keeps other tenants' job IDs and messages to itself, and the page says so.
    assert "ran past 600 s" not in failures and "failed-0" not in failures
    expect(tab.page.locator("#failures-withheld")).to_be_visible()
    assert tab.text("#metric-queued output") == str(client.zcard(QUEUE))
    tab.shot("queue-view")
    client.close()


def test_the_playground_streams_a_job_to_its_end(tab: Tab, gateway: str, fleet: WorkerFleet) -> None:
    fleet.start(1)
    sign_in(tab, gateway)
    run_prompt(tab, "Tell me a story. [[arkq:tokens=40 itl_ms=60]]")
    # Part of the answer on screen while the job still runs: it streams, it is not shown at the end.
    tab.until(
        f"{status_is('running')} && document.querySelector('#answer').textContent.length > 0",
        "the answer streaming in",
    )
    tab.shot("playground-streaming")
    tab.until(status_is("done"), "the job done on the page")
    job_id = tab.playground()["id"]
    job = ended_job(gateway, job_id)
    assert job["status"] == "done"
    assert tab.text("#answer") == job["result"]["text"] != ""
    types = tab.page.eval_on_selector_all("#play-events li", "rows => rows.map(row => row.dataset.type)")
    assert types == ["started", "token", "done"]
    expect(tab.page.locator("#play-job")).to_have_attribute("href", f"/jobs/{job_id}")
    tab.shot("playground-done")


def test_a_reload_mid_stream_resumes_the_same_job(tab: Tab, gateway: str, fleet: WorkerFleet) -> None:
    fleet.start(1)
    sign_in(tab, gateway)
    run_prompt(tab, "A long story. [[arkq:tokens=120 itl_ms=100]]")
    job_id = tab.playground()["id"]
    tab.until("document.querySelector('#answer').textContent.length > 20", "part of the answer")
    for _ in range(2):  # twice, each time mid-stream
        seen = tab.playground()["seq"]
        assert get_job(gateway, job_id)["status"] == "running", "reloaded mid-stream"
        tab.requests.clear()
        tab.page.reload()
        expect(tab.page.locator("#app")).to_be_visible(timeout=WAIT_S * 1000)
        # The text so far is back at once, and the stream picks up after the last event shown.
        assert len(tab.text("#answer")) > 0
        tab.until(f"JSON.parse(sessionStorage.getItem('arkq.playground')).seq > {seen} + 3", "more events")
        streams = [u for u in tab.requests if urlsplit(u).path == f"/v1/jobs/{job_id}/events"]
        assert streams, "the page reopened the job's events"
        assert int(parse_qs(urlsplit(streams[0]).query)["after"][0]) >= seen
    tab.shot("playground-resumed")
    tab.until(status_is("done"), "the job done on the page")
    assert tab.playground()["id"] == job_id, "the same job"
    result = ended_job(gateway, job_id)["result"]
    assert tab.text("#answer") == result["text"], "no piece repeated, none missing"
    assert tab.page.eval_on_selector_all("#play-events li", "rows => rows.length") == 3  # one token run


def test_a_reload_before_the_enqueue_answers_gets_the_same_job(
    tab: Tab, gateway: str, fleet: WorkerFleet, redis_url: str
) -> None:
    """The page keeps its request's Idempotency-Key before sending it: sent again after a reload, the
    request names the job the first one created, and no second job runs."""
    fleet.start(1)
    sign_in(tab, gateway)
    answered: list[dict[str, Any]] = []

    def hold(route: Route) -> None:  # the gateway enqueues the job; the page never hears back
        answered.append(route.fetch().json())

    tab.page.route(f"{gateway}/v1/jobs", hold)
    tab.page.fill("#prompt", "Once. [[arkq:tokens=20]]")
    tab.page.click("#run")
    wait_until(lambda: bool(tab.page.evaluate("1") and answered), WAIT_S, "the job enqueued, its answer held")
    assert tab.text("#play-status") == "sending"
    tab.page.unroute(f"{gateway}/v1/jobs")
    tab.page.reload()
    tab.until(status_is("done"), "the job done on the page")
    job_id = answered[0]["id"]
    assert tab.playground()["id"] == job_id
    assert tab.text("#answer") == ended_job(gateway, job_id)["result"]["text"]
    with redis.Redis.from_url(redis_url) as client:
        assert len(client.keys("ark:result:*")) == 1, "one job ran"


def test_cancel_ends_a_long_job(tab: Tab, gateway: str, fleet: WorkerFleet) -> None:
    fleet.start(1)
    sign_in(tab, gateway)
    run_prompt(tab, "Go on forever. [[arkq:tokens=600 itl_ms=100]]")
    tab.until("document.querySelector('#answer').textContent.length > 0", "the answer streaming in")
    expect(tab.page.locator("#run")).to_be_disabled()
    tab.page.click("#cancel")
    tab.until(status_is("cancelled"), "the job cancelled on the page")
    job = ended_job(gateway, tab.playground()["id"])
    assert job["status"] == "cancelled"
    last = tab.page.eval_on_selector_all("#play-events li", "rows => rows.at(-1).dataset.type")
    assert last == "cancelled"
    expect(tab.page.locator("#run")).to_be_enabled()
    expect(tab.page.locator("#cancel")).to_be_disabled()
    tab.shot("playground-cancelled")

    # Its page has no answer to show, and shows what it streamed before it was cancelled.
    streamed = tab.text("#answer")
    tab.page.click("#play-job")
    expect(tab.page.locator("#job-status")).to_have_attribute(
        "data-status", "cancelled", timeout=WAIT_S * 1000
    )
    tab.until("document.querySelector('#job-events li[data-type=cancelled]') !== null", "the events replayed")
    assert tab.text("#answer") == streamed
    expect(tab.page.locator("#answer-note")).to_be_visible()


def test_the_job_page_shows_events_timings_and_the_result(tab: Tab, gateway: str, fleet: WorkerFleet) -> None:
    fleet.start(1)
    asked = {"messages": [{"role": "user", "content": "Short. [[arkq:tokens=20]]"}]}
    job_id = httpx2.post(f"{gateway}/v1/jobs", json=asked, headers=AUTH).json()["id"]
    job = ended_job(gateway, job_id)
    assert job["status"] == "done"

    sign_in(tab, gateway, f"/jobs/{job_id}")
    expect(tab.page.locator("#job-status")).to_have_attribute("data-status", "done", timeout=WAIT_S * 1000)
    expect(tab.page.locator("#job-id")).to_have_text(job_id)
    tab.until("document.querySelector('#job-events li[data-type=done]') !== null", "the events replayed")
    rows = tab.page.eval_on_selector_all(
        "#job-events li", "rows => rows.map(row => [row.dataset.type, row.dataset.first, row.dataset.last])"
    )
    assert rows == [["started", "0", "0"], ["token", "1", "20"], ["done", "21", "21"]]
    assert tab.text("#answer") == job["result"]["text"] != ""
    assert "stop" in tab.text("#result-facts")
    timings = dict(
        tab.page.eval_on_selector_all(
            "#timings tr", "rows => rows.map(row => [row.dataset.timing, row.cells[1].textContent])"
        )
    )
    assert set(timings) >= {"Enqueued", "Started", "First token", "Finished", "Time in queue", "Total"}
    assert NO_VALUE not in timings.values(), timings
    assert timings["Total"].endswith(("ms", " s"))
    tab.shot("job-page")

    # A failed job's page shows its error.
    failing = {"messages": [{"role": "user", "content": "Refused. [[arkq:status=400]]"}]}
    failed_id = httpx2.post(f"{gateway}/v1/jobs", json=failing, headers=AUTH).json()["id"]
    error = ended_job(gateway, failed_id)["error"]
    tab.page.goto(f"{gateway}/jobs/{failed_id}")
    expect(tab.page.locator("#job-status")).to_have_attribute("data-status", "error", timeout=WAIT_S * 1000)
    expect(tab.page.locator("#error-kind")).to_have_text(error["kind"])
    expect(tab.page.locator("#error-message")).to_have_text(error["message"])
    tab.shot("job-page-error")

    tab.page.goto(f"{gateway}/jobs/no-such-job")  # and one it may not see says so
    expect(tab.page.locator("#job-status")).to_have_attribute("data-status", "unknown", timeout=WAIT_S * 1000)
    expect(tab.page.locator("#job-detail")).to_contain_text("No such job")


def test_no_request_leaves_the_gateway(tab: Tab, gateway: str, fleet: WorkerFleet) -> None:
    fleet.start(1)
    for path in ("/", "/jobs/anything", "/console/console.js", "/console/console.css"):
        served = httpx2.get(f"{gateway}{path}")
        assert served.status_code == 200, path
        assert "default-src 'self'" in served.headers["content-security-policy"], path
    page = httpx2.get(f"{gateway}/")
    assert page.headers["content-type"].startswith("text/html") and "/console/home.js" in page.text
    again = httpx2.get(f"{gateway}/", headers={"If-None-Match": page.headers["etag"]})
    assert again.status_code == 304 and again.content == b"", "revalidated, not sent again"
    assert httpx2.get(f"{gateway}/console/..%2Fapp.py").status_code == 404
    assert httpx2.get(f"{gateway}/console/nothing.js").status_code == 404

    sign_in(tab, gateway)
    run_prompt(tab, "Hello. [[arkq:tokens=10]]")
    tab.until(status_is("done"), "the job done on the page")
    tab.page.click("#play-job")
    expect(tab.page.locator("#job-status")).to_have_attribute("data-status", "done", timeout=WAIT_S * 1000)
    tab.page.go_back()
    expect(tab.page.locator("#app")).to_be_visible(timeout=WAIT_S * 1000)
    tab.until(
        f"document.querySelector('#metric-queued output').textContent !== '{NO_VALUE}'", "the queue view"
    )

    origin = f"{gateway}/"
    assert len(tab.requests) > 10
    assert [url for url in tab.requests if not url.startswith(origin)] == []
    assert tab.errors == [], "no script error, nothing the Content-Security-Policy blocked"
