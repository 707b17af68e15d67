"""GET /metrics: SGLang's request metrics (names, types, the `model_name` label) for the emulator's
requests, read back with prometheus_client's own parser as Prometheus would read them."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fake_llm import FakeLLMServer, running_fake_llm

MODEL = "Qwen/Qwen2.5-7B-Instruct"
#: What SGLang exports under these names (python/sglang/srt/metrics/collector.py).
SGLANG_TYPES = {
    "sglang:time_to_first_token_seconds": "histogram",
    "sglang:inter_token_latency_seconds": "histogram",
    "sglang:e2e_request_latency_seconds": "histogram",
    "sglang:queue_time_seconds": "histogram",
    "sglang:num_running_reqs": "gauge",
    "sglang:num_queue_reqs": "gauge",
    "sglang:prompt_tokens": "counter",
    "sglang:generation_tokens": "counter",
    "sglang:num_requests": "counter",
    "sglang:num_aborted_requests": "counter",
}


async def scrape(url: str) -> dict[str, float]:
    """Every sample of /metrics by name, for the one model (each sample must carry its label)."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            assert sample.labels.pop("model_name") == MODEL, sample
            key = sample.name + "".join(f"{{le={v}}}" for v in sample.labels.values())
            samples[key] = sample.value
    assert types == SGLANG_TYPES
    return samples


@pytest.fixture
async def server() -> Any:
    async with running_fake_llm(model=MODEL, ttft_ms=30, itl_ms=5, api_key="sk-x") as srv:
        yield srv


async def test_a_streamed_and_a_plain_request_are_counted_with_their_tokens_and_times(
    server: FakeLLMServer,
) -> None:
    before = await scrape(server.url)  # open without the key, as SGLang leaves /metrics
    assert before["sglang:num_requests_total"] == 0
    assert before["sglang:time_to_first_token_seconds_count"] == 0

    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-x", max_retries=0) as client:
        messages: Any = [{"role": "user", "content": "Twenty words. [[arkq:tokens=20]]"}]
        stream = await client.chat.completions.create(
            model=MODEL, messages=messages, stream=True, stream_options={"include_usage": True}
        )
        [usage] = [chunk.usage async for chunk in stream if chunk.usage]
        plain = await client.chat.completions.create(model=MODEL, messages=messages, max_tokens=7)
    assert plain.usage is not None and plain.usage.completion_tokens == 7

    after = await scrape(server.url)
    assert after["sglang:num_requests_total"] == 2
    assert after["sglang:num_aborted_requests_total"] == 0
    assert after["sglang:generation_tokens_total"] == 20 + 7
    assert after["sglang:prompt_tokens_total"] == usage.prompt_tokens + plain.usage.prompt_tokens
    assert after["sglang:time_to_first_token_seconds_count"] == 2
    assert after["sglang:time_to_first_token_seconds_sum"] >= 2 * 0.03
    # Only the stream has outputs after its first: 19 inter-token gaps of about 5 ms.
    assert after["sglang:inter_token_latency_seconds_count"] == 19
    assert 19 * 0.004 <= after["sglang:inter_token_latency_seconds_sum"] < 19 * 0.05
    assert after["sglang:inter_token_latency_seconds_bucket{le=0.002}"] == 0
    assert after["sglang:inter_token_latency_seconds_bucket{le=+Inf}"] == 19
    assert after["sglang:e2e_request_latency_seconds_count"] == 2
    assert after["sglang:queue_time_seconds_bucket{le=0.0}"] == 2  # no queue in the emulator
    assert after["sglang:num_running_reqs"] == 0 and after["sglang:num_queue_reqs"] == 0


async def test_running_requests_are_a_gauge_and_an_abort_counts_as_aborted(server: FakeLLMServer) -> None:
    headers = {"Authorization": "Bearer sk-x"}
    body = {
        "model": MODEL,
        "stream": True,
        "rid": "slow-1",
        "messages": [{"role": "user", "content": "slow [[arkq:tokens=500 itl_ms=20]]"}],
    }
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(server.base_url + "/chat/completions", json=body) as response,
    ):
        await response.content.readline()  # the first token is out
        assert (await scrape(server.url))["sglang:num_running_reqs"] == 1
        async with session.post(server.url + "/abort_request", json={"rid": "slow-1"}) as aborted:
            assert aborted.status == 200
        await response.read()
    after = await scrape(server.url)
    assert after["sglang:num_running_reqs"] == 0
    assert after["sglang:num_requests_total"] == 1 and after["sglang:num_aborted_requests_total"] == 1
    assert 0 < after["sglang:generation_tokens_total"] < 500


async def test_a_request_refused_before_generation_is_not_observed(server: FakeLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "[[arkq:status=400]]"}]
            )
    assert (await scrape(server.url))["sglang:num_requests_total"] == 0
