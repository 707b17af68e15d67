"""`arkq serve` as clients use it: the official `openai` SDK and raw HTTP, against real gateway,
worker, emulator and redis-server processes."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import jsonschema
import openai
import pytest
import redis

from tests.servers import Process, WorkerFleet, ark_env, start_gateway, start_redis
from tests.waiting import until

ALICE, BOB = "sk-alice-0123", "sk-bob-4567"
#: Bob's key is configured as its SHA-256, as an operator who keeps no plaintext key would.
KEYS = json.dumps({"alice": ALICE, "bob": "sha256:" + hashlib.sha256(BOB.encode()).hexdigest()})
MODEL = "tgi"  # llm.model_name's default, which the emulator serves
HELLO = [{"role": "user", "content": "Hello there."}]
SLOW = [{"role": "user", "content": "Tell me a long story. [[arkq:tokens=60 itl_ms=40]]"}]


@dataclass
class Gateways:
    """`arkq serve` processes for one test, all on the same Redis."""

    log_dir: Path
    env: dict[str, str]
    processes: list[Process] = field(default_factory=list)

    def start(self, *options: str, **settings: str) -> str:
        env = {**self.env, **{f"ARK_{k.upper()}": v for k, v in settings.items()}}
        process, url = start_gateway(self.log_dir, env, *options)
        self.processes.append(process)
        return url

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def gateways(
    request: pytest.FixtureRequest, redis_url: str, fake_llm: str, log_dir: Path
) -> Iterator[Gateways]:
    directory = log_dir / f"gw-{request.node.name[:50]}"
    directory.mkdir(parents=True, exist_ok=True)
    started = Gateways(directory, ark_env(redis_url, fake_llm, gateway__api_keys=KEYS))
    yield started
    started.stop()
    if request.node.stash.get(_failed_key(), False):
        print("\n".join(p.log() for p in started.processes))


def _failed_key() -> pytest.StashKey[bool]:
    from tests.integration.conftest import FAILED

    return FAILED


def client(url: str, key: str = ALICE) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def http(url: str, key: str | None = ALICE) -> httpx2.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx2.AsyncClient(base_url=url, headers=headers, timeout=60)


async def direct(fake_llm: str, **request: object) -> str:
    async with openai.AsyncOpenAI(base_url=fake_llm, api_key="-", max_retries=0) as llm:
        answer = await llm.chat.completions.create(model=MODEL, **request)  # type: ignore[call-overload]
    return answer.choices[0].message.content or ""


async def sse(response: httpx2.Response) -> list[dict[str, str]]:
    """The SSE events of a response, each as its fields (comments dropped)."""
    events, current = [], {}
    async for line in response.aiter_lines():
        if not line:
            if current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")
    return events


# --- OpenAI's Chat Completions ----------------------------------------------------------------------


async def test_the_openai_sdk_streams_and_completes_through_the_queue(
    gateways: Gateways, fleet: WorkerFleet, fake_llm: str
) -> None:
    fleet.start(1)
    url = gateways.start()
    expected = await direct(fake_llm, messages=HELLO, max_tokens=50, temperature=0.7)
    async with client(url) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=50,  # type: ignore[arg-type]
        )
        answer = raw.parse()
        job_id = raw.headers["x-arkq-job-id"]
        assert answer.id == f"chatcmpl-{job_id}"
        assert answer.choices[0].message.content == expected
        assert answer.usage is not None and answer.usage.completion_tokens > 0

        stream = await sdk.chat.completions.create(
            model=MODEL,
            messages=HELLO,  # type: ignore[arg-type]
            max_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({c.id for c in chunks}) == 1

    async with client(url) as sdk:
        models = await sdk.models.list()
    assert [m.id for m in models.data] == [MODEL]


async def test_structured_output_and_a_tool_round_trip(gateways: Gateways, fleet: WorkerFleet) -> None:
    fleet.start(1)
    url = gateways.start()
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "people": {"type": "integer"}},
        "required": ["city", "people"],
    }
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    async with client(url) as sdk:
        structured = await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "A city?"}],
            response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
        )
        jsonschema.validate(json.loads(structured.choices[0].message.content or ""), schema)
        as_object = await sdk.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Any JSON."}],
            response_format={"type": "json_object"},
        )
        assert isinstance(json.loads(as_object.choices[0].message.content or ""), dict)

        asked = [{"role": "user", "content": "Weather in Oslo?"}]
        called = await sdk.chat.completions.create(model=MODEL, messages=asked, tools=[tool])  # type: ignore[arg-type,list-item]
        assert called.choices[0].finish_reason == "tool_calls"
        [call] = called.choices[0].message.tool_calls or []
        assert call.function.name == "weather" and "city" in json.loads(call.function.arguments)
        final = await sdk.chat.completions.create(
            model=MODEL,
            messages=[
                *asked,
                called.choices[0].message,
                {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear"}'},
            ],  # type: ignore[list-item]
            tools=[tool],  # type: ignore[list-item]
            tool_choice="none",
        )
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content


async def test_each_error_has_openais_shape_and_status(
    gateways: Gateways, redis_url: str, tmp_path: Path
) -> None:
    url = gateways.start(gateway__max_body_bytes="20000", gateway__max_active_jobs_per_key="1")
    async with client(url) as sdk:
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk.chat.completions.create(model=MODEL, messages=HELLO, n=3)  # type: ignore[arg-type]
        assert bad.value.param == "n" and "n" in bad.value.message
        with pytest.raises(openai.BadRequestError) as bad:
            await sdk.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])  # type: ignore[list-item,misc]
        assert bad.value.param == "messages"
        with pytest.raises(openai.NotFoundError) as missing:
            await sdk.chat.completions.create(model="gpt-9", messages=HELLO)  # type: ignore[arg-type]
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.APIStatusError) as too_large:
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "x" * 30_000}]
            )
        assert too_large.value.status_code == 413
    async with client(url, "sk-wrong") as sdk:
        with pytest.raises(openai.AuthenticationError) as refused:
            await sdk.models.list()
    assert refused.value.code == "invalid_api_key"
    async with http(url, None) as anonymous:
        keyless = await anonymous.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO})
    assert keyless.status_code == 401 and keyless.json()["error"]["code"] == "invalid_api_key"
    # No worker runs: the first job stays queued, and alice is at her limit of one.
    async with http(url) as alice, http(url, BOB) as bob:
        first = await alice.post("/v1/jobs", json={"messages": HELLO})
        assert first.status_code == 202
        limited = await alice.post("/v1/jobs", json={"messages": HELLO})
        assert limited.status_code == 429 and limited.headers["retry-after"]
        assert limited.json()["error"]["code"] == "active_jobs_limit"
        assert (await bob.post("/v1/jobs", json={"messages": HELLO})).status_code == 202  # bob has his own
    async with client(url) as sdk:
        with pytest.raises(openai.RateLimitError) as rate_limited:
            await sdk.chat.completions.create(model=MODEL, messages=HELLO)  # type: ignore[arg-type]
        assert rate_limited.value.code == "active_jobs_limit"
        assert rate_limited.value.response.headers["retry-after"]
    async with http(url) as alice:
        unknown = await alice.get("/v1/jobs/no-such-job")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "job_not_found"

    # Redis gone: 503 with Retry-After, answered within the timeout rather than hanging.
    process, lone_url = start_redis(tmp_path)
    lone = gateways.start(redis__url=lone_url, redis__connect_timeout_s="1", redis__retry_s="1")
    process.stop()
    async with http(lone) as alice:
        began = time.monotonic()
        down = await alice.post("/v1/jobs", json={"messages": HELLO})
        assert down.status_code == 503 and down.headers["retry-after"], down.text
        assert down.json()["error"]["code"] == "redis_unavailable"
        assert time.monotonic() - began < 1 + 5  # redis.connect_timeout_s, and a margin for a busy machine
        assert (await alice.get("/readyz")).status_code == 503
    async with client(lone) as sdk:
        with pytest.raises(openai.InternalServerError) as unavailable:
            await sdk.chat.completions.create(model=MODEL, messages=HELLO)  # type: ignore[arg-type]
        assert unavailable.value.status_code == 503 and unavailable.value.code == "redis_unavailable"


async def test_the_queue_full_answers_429(gateways: Gateways) -> None:
    url = gateways.start(queue__max_depth="1")
    async with http(url) as alice:
        assert (await alice.post("/v1/jobs", json={"messages": HELLO})).status_code == 202
        full = await alice.post("/v1/jobs", json={"messages": HELLO})
    assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"


async def test_a_job_failing_mid_stream_ends_the_stream_with_its_kind(
    gateways: Gateways, fleet: WorkerFleet
) -> None:
    fleet.env["ARK_LLM__MAX_RETRIES"] = "0"
    fleet.start(1)
    url = gateways.start()
    failing = [{"role": "user", "content": "Go. [[arkq:stream_error=400 error_after=3]]"}]
    async with client(url) as sdk:
        stream = await sdk.chat.completions.create(model=MODEL, messages=failing, stream=True)  # type: ignore[arg-type]
        texts = []
        with pytest.raises(openai.APIError) as failed:
            async for chunk in stream:
                texts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert "".join(texts).strip()  # the tokens before the failure arrived
    assert "failed" in failed.value.message


async def test_a_restart_after_output_ends_the_stream_naming_the_job(
    gateways: Gateways, fleet: WorkerFleet
) -> None:
    """Text once sent is not sent again: where the worker starts the job over after a cut stream (here
    because continuing is turned off), the client is told to read the final answer from the jobs API."""
    fleet.env["ARK_WORKER__RESUME_PARTIAL"] = "false"
    fleet.start(1)
    url = gateways.start()
    cut = [{"role": "user", "content": "Go. [[arkq:cut_after=3 times=1 itl_ms=5]]"}]
    async with client(url) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(model=MODEL, messages=cut, stream=True)  # type: ignore[arg-type]
        job_id = raw.headers["x-arkq-job-id"]
        texts = []
        with pytest.raises(openai.APIError) as restarted:
            async for chunk in raw.parse():
                texts.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert job_id in restarted.value.message and f"/v1/jobs/{job_id}" in restarted.value.message
    async with http(url) as alice:
        await until(lambda: _ended(alice, job_id), 30, "the restarted job's end")
        final = (await alice.get(f"/v1/jobs/{job_id}")).json()
    sent = "".join(texts)
    assert sent and final["result"]["attempts"] == 2
    assert final["result"]["text"] != sent  # what was sent was the first attempt's start only


async def test_a_cut_stream_goes_on_through_the_openai_stream(gateways: Gateways, fleet: WorkerFleet) -> None:
    """The worker continues the answer after the cut: the client's stream just goes on, and ends with
    the answer it would have had without the cut."""
    fleet.start(1)
    url = gateways.start()
    # A directive text of its own: the emulator counts `times` per directive text.
    cut = [{"role": "user", "content": "Go on. [[arkq:cut_after=4 times=1 itl_ms=4]]"}]
    whole = [{"role": "user", "content": "Go on. [[arkq:itl_ms=4]]"}]  # the same words: the same answer
    async with client(url) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(model=MODEL, messages=cut, stream=True)  # type: ignore[arg-type]
        texts = [chunk.choices[0].delta.content or "" async for chunk in raw.parse() if chunk.choices]
        uninterrupted = await sdk.chat.completions.create(model=MODEL, messages=whole)  # type: ignore[arg-type]
    assert "".join(texts) == uninterrupted.choices[0].message.content
    async with http(url) as alice:
        job = (await alice.get(f"/v1/jobs/{raw.headers['x-arkq-job-id']}")).json()
    assert job["result"]["attempts"] == 2, "the stream was cut once, and continued"


async def _status(alice: httpx2.AsyncClient, job_id: str) -> str:
    return str((await alice.get(f"/v1/jobs/{job_id}")).json()["status"])


# --- Durable jobs, resumable streams -----------------------------------------------------------------


async def test_a_job_stream_resumes_exactly_where_it_left_off_on_any_gateway(
    gateways: Gateways, fleet: WorkerFleet
) -> None:
    fleet.start(1)
    first, second = gateways.start(), gateways.start()
    async with http(first) as alice, http(second) as alice_elsewhere:
        created = await alice.post(
            "/v1/jobs", json={"messages": SLOW}, headers={"Idempotency-Key": "story-1"}
        )
        assert created.status_code == 202
        job = created.json()
        # A worker is up: it may have taken the job by the time the answer is written.
        assert job["object"] == "arkq.job" and job["status"] in {"queued", "running"} and job["created_at"]
        again = await alice.post("/v1/jobs", json={"messages": SLOW}, headers={"Idempotency-Key": "story-1"})
        assert again.json()["id"] == job["id"]
        other = [{"role": "user", "content": "Something else."}]
        reused = await alice.post(
            "/v1/jobs", json={"messages": other}, headers={"Idempotency-Key": "story-1"}
        )
        assert reused.status_code == 422 and reused.json()["error"]["code"] == "idempotency_key_reused"
        events_path = f"/v1/jobs/{job['id']}/events"

        # Read a few events, drop the connection mid-stream...
        seen: list[dict[str, str]] = []
        async with alice.stream("GET", events_path) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            current: dict[str, str] = {}
            async for line in response.aiter_lines():
                if not line and current:
                    seen.append(current)
                    current = {}
                    if len(seen) == 5:
                        break
                elif line and not line.startswith(":"):
                    name, _, value = line.partition(":")
                    current[name] = value.removeprefix(" ")
        # ...and resume on the other gateway with Last-Event-ID.
        async with alice_elsewhere.stream(
            "GET", events_path, headers={"Last-Event-ID": seen[-1]["id"]}
        ) as response:
            rest = await sse(response)
        whole = seen + rest
        assert [int(e["id"]) for e in whole] == list(range(len(whole)))
        assert [json.loads(e["data"])["seq"] for e in whole] == list(range(len(whole)))
        assert whole[-1]["event"] == "done" and whole[0]["event"] == "started"
        assert all(e["event"] == json.loads(e["data"])["type"] for e in whole)

        # After the end: ?after=N gives what follows N; past the terminal event, 204 stops an EventSource.
        async with alice.stream("GET", f"{events_path}?after=2") as response:
            tail = await sse(response)
        assert [int(e["id"]) for e in tail] == list(range(3, len(whole)))
        done = await alice.get(events_path, headers={"Last-Event-ID": whole[-1]["id"]})
        assert done.status_code == 204

        status = (await alice_elsewhere.get(f"/v1/jobs/{job['id']}")).json()
        assert status["status"] == "done"
        assert status["result"]["text"] == json.loads(whole[-1]["data"])["text"]
        assert status["result"]["finish_reason"] and status["result"]["usage"]


async def test_a_gateway_killed_mid_stream_loses_the_client_nothing(
    gateways: Gateways, fleet: WorkerFleet
) -> None:
    fleet.start(1)
    doomed, survivor = gateways.start(), gateways.start()
    async with http(doomed) as alice, http(survivor) as alice_elsewhere:
        job_id = (await alice.post("/v1/jobs", json={"messages": SLOW})).json()["id"]
        seen: list[str] = []
        with pytest.raises(httpx2.HTTPError):
            async with alice.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        seen.append(line.split(":", 1)[1].strip())
                        if len(seen) == 4:
                            gateways.processes[0].popen.send_signal(signal.SIGKILL)
        async with alice_elsewhere.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": seen[-1]}
        ) as response:
            rest = [e["id"] for e in await sse(response)]
    ids = [int(i) for i in seen + rest]
    assert ids == list(range(len(ids))) and len(ids) > 10


async def test_an_idle_stream_carries_heartbeats(gateways: Gateways) -> None:
    url = gateways.start(gateway__sse_heartbeat_s="0.3")  # no worker: the job stays queued
    async with http(url) as alice:
        job_id = (await alice.post("/v1/jobs", json={"messages": HELLO})).json()["id"]
        comments = 0
        async with alice.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            async for line in response.aiter_lines():
                comments += line.startswith(":")
                if comments == 3:
                    break
    assert comments == 3


# --- Tenancy and cancellation -----------------------------------------------------------------------


async def test_a_tenant_sees_only_its_own_jobs(gateways: Gateways) -> None:
    url = gateways.start()
    async with http(url) as alice, http(url, BOB) as bob:
        job_id = (await alice.post("/v1/jobs", json={"messages": HELLO})).json()["id"]
        for method, path in (("GET", ""), ("GET", "/events"), ("POST", "/cancel")):
            theirs = await bob.request(method, f"/v1/jobs/{job_id}{path}")
            unknown = await bob.request(method, f"/v1/jobs/no-such-job{path}")
            assert theirs.status_code == unknown.status_code == 404, path
            assert theirs.json()["error"]["code"] == unknown.json()["error"]["code"] == "job_not_found"
        assert (await alice.get(f"/v1/jobs/{job_id}")).json()["status"] == "queued"
        cancelled = await alice.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert (await alice.post(f"/v1/jobs/{job_id}/cancel")).json()["status"] == "cancelled"  # idempotent


async def test_a_chat_client_leaving_cancels_its_job_unless_it_asks_otherwise(
    gateways: Gateways, fleet: WorkerFleet
) -> None:
    fleet.start(1)
    url = gateways.start()
    outcomes = {}
    for header in ("", "continue"):
        headers = {"X-Arkq-On-Disconnect": header} if header else {}
        async with http(url) as alice:
            body = {"model": MODEL, "messages": SLOW, "stream": True}
            async with alice.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
                job_id = response.headers["x-arkq-job-id"]
                async for line in response.aiter_lines():
                    if '"content": "' in line or '"content":"' in line:
                        break  # some text arrived: leave
        async with http(url) as alice:
            await until(lambda j=job_id: _ended(alice, j), 60, "the job's end")
            outcomes[header] = await _status(alice, job_id)
    assert outcomes == {"": "cancelled", "continue": "done"}


async def _ended(alice: httpx2.AsyncClient, job_id: str) -> bool:
    return await _status(alice, job_id) in {"done", "error", "cancelled"}


def test_without_keys_it_serves_loopback_only(redis_url: str, fake_llm: str, log_dir: Path) -> None:
    import subprocess

    from tests.servers import BIN

    env = ark_env(redis_url, fake_llm)
    refused = subprocess.run(
        [str(BIN / "arkq"), "serve", "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "ARK_GATEWAY__API_KEYS" in refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    process, url = start_gateway(log_dir, env, "--insecure-no-auth")
    try:
        assert httpx2.get(f"{url}/readyz").status_code == 200
        assert httpx2.get(f"{url}/v1/models").status_code == 200  # no key needed
    finally:
        process.stop()


async def test_a_non_streamed_client_leaving_cancels_its_job(
    gateways: Gateways, fleet: WorkerFleet, redis_url: str
) -> None:
    fleet.start(1)
    url = gateways.start()
    async with http(url) as alice:
        with pytest.raises(httpx2.ReadTimeout):  # the answer takes seconds: the client gives up first
            await alice.post("/v1/chat/completions", json={"model": MODEL, "messages": SLOW}, timeout=1.5)
        [owner_key] = redis.Redis.from_url(redis_url).keys("ark:owner:*")
        job_id = owner_key.decode().removeprefix("ark:owner:")
        await until(lambda: _ended(alice, job_id), 30, "the job's end")
        assert await _status(alice, job_id) == "cancelled"
        assert (await alice.get("/v1/models")).status_code == 200  # the gateway serves on
    assert "Traceback" not in gateways.processes[0].log()
