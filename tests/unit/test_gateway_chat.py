"""The gateway's translation of OpenAI requests and answers, and its keys, without processes."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from arkq.contract import DoneEvent, JobResult, StartedEvent, Timings, TokenEvent, ToolCallEvent
from arkq.errors import ConfigError
from gateway.auth import ANONYMOUS, Keys, refuse_open_door
from gateway.chat import ChunkWriter, completion, parse_chat_request
from gateway.errors import ApiError

USER = [{"role": "user", "content": "hi"}]


def parse(**body: object) -> object:
    return parse_chat_request({"messages": USER, **body}, default_model="m")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"n": 3}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"logit_bias": {"1": 2}}, "logit_bias"),
        ({"stream_options": {"include_usage": True, "other": 1}}, "stream_options"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages",
        ),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages"),
        ({"messages": [{"role": "user", "content": "x", "audio": {"id": "a"}}]}, "messages"),
    ],
)
def test_what_arkq_cannot_honour_is_refused_by_name(body: dict[str, object], param: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_chat_request({"messages": USER, **body}, default_model="m")
    assert refused.value.status == 400 and refused.value.param == param
    assert refused.value.body()["error"]["param"] == param


def test_a_request_becomes_a_job() -> None:
    call = parse_chat_request(
        {
            "model": "m",
            "messages": [
                {
                    "role": "developer",
                    "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
                },
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}], "refusal": None},
                {"role": "tool", "content": "42", "tool_call_id": "c1"},
            ],
            "max_completion_tokens": 7,
            "stream": True,
            "stream_options": {"include_usage": True},
            "response_format": {"type": "json_object"},
            "top_p": 0.5,
            "stop": ["\n"],
            "seed": 3,
            "n": 1,
            "user": "u-1",
            "metadata": {"a": 1},
        },
        default_model="m",
    )
    assert call.stream and call.include_usage and call.model == "m"
    assert call.enqueue["messages"][0] == {"role": "system", "content": "Be brief."}
    assert call.enqueue["messages"][2] == {"role": "assistant", "content": None, "tool_calls": [{"id": "c1"}]}
    assert call.enqueue["max_tokens"] == 7 and call.enqueue["json_object"] is True
    assert (call.enqueue["top_p"], call.enqueue["stop"], call.enqueue["seed"]) == (0.5, ["\n"], 3)
    assert call.metadata == {"a": 1, "user": "u-1"}
    assert (
        parse_chat_request({"messages": USER, "stream": True}, default_model="m", stream_allowed=False).stream
        is False
    )


def test_chunks_follow_openais_order() -> None:
    writer = ChunkWriter("j", "m", include_usage=True)
    events = [
        StartedEvent(job_id="j", seq=0, attempt=1, worker="w"),
        TokenEvent(job_id="j", seq=1, text="Hel"),
        ToolCallEvent(job_id="j", seq=2, index=0, id="c1", name="f", arguments="{"),
        DoneEvent(job_id="j", seq=3, finish_reason="stop", usage={"completion_tokens": 1}, text="Hel"),
    ]
    chunks = [chunk for event in events for chunk in writer.chunks(event)]
    assert all(c["id"] == "chatcmpl-j" and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hel"}
    call = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert call == {"index": 0, "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{"}}
    assert chunks[3]["choices"][0]["finish_reason"] == "stop"
    assert chunks[4]["choices"] == [] and chunks[4]["usage"] == {"completion_tokens": 1}


def test_a_completion_carries_the_result() -> None:
    timings = Timings(enqueued_at=100.0, started_at=101.0, finished_at=102.0)
    result = JobResult(
        job_id="j", status="done", text="", tool_calls=[{"id": "c"}], reasoning="r", timings=timings
    )
    body = completion(result, model="m")
    assert body["id"] == "chatcmpl-j" and body["created"] == 100
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c"}],
        "reasoning_content": "r",
    }


def test_keys_name_their_tenant_and_hashes_work_as_keys() -> None:
    keys = Keys(
        {"alice": SecretStr("sk-a"), "bob": SecretStr("sha256:" + hashlib.sha256(b"sk-b").hexdigest())}
    )
    assert keys.tenant_for("Bearer sk-a") == "alice"
    assert keys.tenant_for("bearer sk-b") == "bob"
    for wrong in (None, "", "Bearer", "Bearer sk-c", "Basic sk-a", "sk-a"):
        assert keys.tenant_for(wrong) is None
    assert Keys({}).tenant_for(None) == ANONYMOUS
    with pytest.raises(ConfigError, match="64 hex"):
        Keys({"x": SecretStr("sha256:abc")})
    with pytest.raises(ConfigError, match="tenant name"):
        Keys({"a b": SecretStr("k")})


def test_no_keys_means_loopback_only() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        refuse_open_door(host, Keys({}), insecure_no_auth=False)
    with pytest.raises(ConfigError, match="ARK_GATEWAY__API_KEYS"):
        refuse_open_door("0.0.0.0", Keys({}), insecure_no_auth=False)
    refuse_open_door("0.0.0.0", Keys({}), insecure_no_auth=True)
    refuse_open_door("0.0.0.0", Keys({"a": SecretStr("k")}), insecure_no_auth=False)


def test_a_stream_token_opens_one_jobs_events_for_a_while() -> None:
    keys = Keys({"alice": SecretStr("sk-a"), "bob": SecretStr("sk-b")})
    token = keys.stream_token("alice", "job-1", expires=2_000)
    assert keys.tenant_for_stream(token, "job-1", now=1_000) == "alice"
    assert keys.tenant_for_stream(token, "job-2", now=1_000) is None  # another job
    assert keys.tenant_for_stream(token, "job-1", now=2_001) is None  # expired
    forged = token.replace(".alice", ".bob")
    assert keys.tenant_for_stream(forged, "job-1", now=1_000) is None  # another tenant's name
    longer = "3000" + token[4:]
    assert keys.tenant_for_stream(longer, "job-1", now=1_000) is None  # a changed expiry
    assert keys.tenant_for_stream("junk", "job-1", now=1_000) is None
