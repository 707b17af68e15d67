"""A real browser (Chromium, driven by Playwright) follows a job with `EventSource`, the way a web page
would: with the job's stream token (an EventSource cannot send an Authorization header), through a
gateway that dies mid-stream and comes back, resuming on its own with Last-Event-ID, and stopping for
good once the job has ended (the gateway answers its last reconnect with 204)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx2
from playwright.sync_api import Browser

from tests.servers import WorkerFleet, ark_env, start_gateway

PAGE = """<!doctype html>
<title>arkq events</title>
<script>
  window.seen = [];
  window.opened = 0;
  window.follow = (url) => {
    const source = new EventSource(url);
    window.source = source;
    source.onopen = () => { window.opened += 1; };
    const types = ["started", "token", "reasoning", "tool_call", "reset", "done", "error", "cancelled"];
    for (const type of types) {
      source.addEventListener(type, (event) => {
        window.seen.push({ id: event.lastEventId, type: event.type, data: JSON.parse(event.data) });
      });
    }
  };
</script>
"""


def test_an_event_source_resumes_on_its_own_through_a_gateway_restart(
    browser: Browser, redis_url: str, fake_llm: str, fleet: WorkerFleet, log_dir: Path
) -> None:
    fleet.start(1)
    env = ark_env(redis_url, fake_llm, gateway__api_keys=json.dumps({"web": "sk-web"}))
    process, url = start_gateway(log_dir, env)
    port = int(url.rsplit(":", 1)[1])
    try:
        slow = [{"role": "user", "content": "A story. [[arkq:tokens=40 itl_ms=100]]"}]
        created = httpx2.post(
            f"{url}/v1/jobs", json={"messages": slow}, headers={"Authorization": "Bearer sk-web"}
        ).json()
        events_url = created["events_url"]
        assert "token=" in events_url
        assert httpx2.get(f"{url}/v1/jobs/{created['id']}/events").status_code == 401  # no key, no token

        page = browser.new_page()
        # The page is served from the gateway's origin, as an app behind the same host would be.
        page.route(f"{url}/app", lambda route: route.fulfill(body=PAGE, content_type="text/html"))
        page.goto(f"{url}/app")
        page.evaluate("url => window.follow(url)", events_url)
        page.wait_for_function("window.seen.length >= 5", timeout=30_000)

        process.popen.send_signal(signal.SIGKILL)  # mid-stream: the browser sees its connection drop
        process.popen.wait()
        process, _ = start_gateway(log_dir, env, port=port)

        page.wait_for_function(
            "window.seen.length > 0 && ['done', 'error', 'cancelled'].includes(window.seen.at(-1).type)",
            timeout=60_000,
        )
        # Past the end, the browser's reconnect gets 204 and the EventSource closes for good.
        page.wait_for_function("window.source.readyState === 2", timeout=30_000)
        seen = page.evaluate("window.seen")
        opened = page.evaluate("window.opened")
    finally:
        process.stop()
    assert opened >= 2, "the EventSource reconnected by itself"
    seqs = [int(event["id"]) for event in seen]
    assert seqs == list(range(len(seqs))), "every event exactly once, in order, across the restart"
    assert [event["data"]["seq"] for event in seen] == seqs
    assert seen[0]["type"] == "started" and seen[-1]["type"] == "done"
    tokens = "".join(event["data"]["text"] for event in seen if event["type"] == "token")
    assert tokens == seen[-1]["data"]["text"]
