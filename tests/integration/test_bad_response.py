"""A job behind a misconfigured LLM server: `llm.base_url` reaches a gateway's login page (HTTP 200,
text/html) instead of the model. Through a real worker process and a real redis-server, the job must
end at once with an error event of kind `bad_response` that says what answered, after exactly one
request (counted at the emulator's /stats): no retry by the link, no new attempt by the worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from arkq.contract import ErrorEvent
from producer import JobFailed, Producer
from tests.servers import WorkerFleet, ark_env, start_fake_llm
from tests.streams import assert_one_end

#: A budget that would allow two retries, fast: only a bad_response that is never retried sends one.
RETRIES = {
    "ARK_LLM__MAX_RETRIES": "2",
    "ARK_LLM__BACKOFF_BASE_S": "0.01",
    "ARK_LLM__BACKOFF_MAX_S": "0.02",
    "ARK_WORKER__MAX_TRIES": "4",
}


@pytest.fixture
def own_llm(tmp_path: Path) -> Iterator[str]:
    """An emulator of the test's own, so that its request count is this test's alone."""
    process, base_url = start_fake_llm(tmp_path)
    yield base_url
    process.stop()


def requests_at(base_url: str) -> int:
    stats = httpx2.get(base_url.removesuffix("/v1") + "/stats").json()
    return int(stats["requests"])


async def test_a_login_page_ends_the_job_as_bad_response_after_one_request(
    fleet: WorkerFleet, producer: Producer, redis_url: str, own_llm: str
) -> None:
    fleet.env.update(ark_env(redis_url, own_llm), **RETRIES)
    fleet.start(1)
    job = await producer.enqueue([{"role": "user", "content": "hello [[arkq:html=1]]"}])
    with pytest.raises(JobFailed) as failed:
        await job.result(timeout=60)
    events = [event async for event in producer.job(job.id).events()]
    assert_one_end(events)
    assert [event.type for event in events] == ["started", "error"], "one attempt, nothing streamed"
    error = events[-1]
    assert isinstance(error, ErrorEvent)
    assert (error.kind, error.retryable) == ("bad_response", False)
    assert f"{own_llm}/chat/completions" in error.message
    assert "text/html" in error.message and "<!DOCTYPE html>" in error.message
    assert "does llm.base_url point at an OpenAI-compatible server" in error.message
    assert failed.value.kind == "bad_response"
    assert requests_at(own_llm) == 1
