"""ArkModelLink's settings, validation, message formatting and client lifecycle (no server needed)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import SecretStr

from config_module import loader
from config_module.settings import ArkConfig, LLMConfig
from model_module import ArkModelLink as ExportedLink
from model_module import Finish, ModelError, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from model_module.ArkModelNew import (
    AIMessage,
    ArkModelLink,
    Message,
    SystemMessage,
    ToolMessage,
    UserMessage,
)


@pytest.fixture
def custom_config(monkeypatch: pytest.MonkeyPatch) -> LLMConfig:
    llm = LLMConfig(
        base_url="http://sglang.internal:30000/v1",
        model_name="qwen-2.5",
        api_key=SecretStr("sk-test"),
        max_tokens=333,
        temperature=0.25,
        connect_timeout_s=1.5,
        read_timeout_s=9.0,
        max_retries=5,
        backoff_base_s=0.2,
        backoff_max_s=3.0,
    )
    monkeypatch.setattr(loader, "config", ArkConfig(llm=llm))
    return llm


def test_exports() -> None:
    assert ExportedLink is ArkModelLink
    for name in (Finish, ModelError, ReasoningDelta, TextDelta, ToolCallDelta, StreamEvent):
        assert name is not None


def test_docs_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "config", ArkConfig())
    llm = ArkModelLink()
    assert (llm.model_name, llm.base_url, llm.max_tokens, llm.temperature) == (
        "tgi",
        "http://0.0.0.0:30000/v1",
        1024,
        0.7,
    )


def test_settings_come_from_config(custom_config: LLMConfig) -> None:
    llm = ArkModelLink()
    assert llm.model_name == "qwen-2.5"
    assert llm.base_url == "http://sglang.internal:30000/v1"
    assert (llm.max_tokens, llm.temperature) == (333, 0.25)
    assert (llm.connect_timeout_s, llm.read_timeout_s) == (1.5, 9.0)
    assert (llm.max_retries, llm.backoff_base_s, llm.backoff_max_s) == (5, 0.2, 3.0)
    assert llm.client.api_key == "sk-test"
    assert "sk-test" not in repr(llm)


def test_arguments_override_config(custom_config: LLMConfig) -> None:
    llm = ArkModelLink(
        "other-model",
        "http://localhost:1/v1",
        2048,
        0.0,
        api_key="k",
        connect_timeout_s=0.5,
        read_timeout_s=2,
        max_retries=0,
        backoff_base_s=0.01,
        backoff_max_s=0.02,
    )
    assert (llm.model_name, llm.base_url, llm.max_tokens, llm.temperature) == (
        "other-model",
        "http://localhost:1/v1",
        2048,
        0.0,
    )
    assert (llm.max_retries, llm.backoff_base_s, llm.backoff_max_s) == (0, 0.01, 0.02)
    assert llm.client.api_key == "k"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_retries": -1}, "max_retries"),
        ({"read_timeout_s": 0}, "read_timeout_s"),
        ({"model_name": ""}, "model_name"),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ArkModelLink(**kwargs)


async def test_per_call_overrides_are_validated() -> None:
    llm = ArkModelLink(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValueError, match="temperature"):
        async for _ in llm.stream([UserMessage(content="hi")], temperature=3):
            pass
    with pytest.raises(ValueError, match="max_tokens"):
        async for _ in llm.stream([UserMessage(content="hi")], max_tokens=0):
            pass


def test_request_parameters() -> None:
    llm = ArkModelLink(model_name="m", max_tokens=10, temperature=0.5)
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    params = llm._params(
        [UserMessage(content="hi")],
        schema,
        max_tokens=None,
        temperature=None,
        model=None,
        rid="job-1",
        extra_body={"priority": 3},
    )
    assert params == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
        "temperature": 0.5,
        "response_format": schema,
        "extra_body": {"priority": 3, "rid": "job-1"},
    }
    bare = llm._params([{"role": "user", "content": "hi"}], None, max_tokens=5, temperature=1.0, model="n")
    assert bare == {
        "model": "n",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 1.0,
    }


def test_format_messages_keeps_tool_calls_and_accepts_dicts() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[Message | dict[str, Any]] = [
        SystemMessage(content="be brief"),
        UserMessage(content="hi"),
        AIMessage(content=None, tool_calls=[call]),
        ToolMessage(content='{"result": 1}', tool_call_id="call_1"),
        AIMessage(content="done"),
        Message(role="user", content="plain base class"),
        {"role": "user", "content": "a dict"},
    ]
    assert ArkModelLink()._format_messages(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": '{"result": 1}', "tool_call_id": "call_1"},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "plain base class"},
        {"role": "user", "content": "a dict"},
    ]


async def test_one_cached_client_with_settings() -> None:
    llm = ArkModelLink(base_url="http://127.0.0.1:9/v1", connect_timeout_s=1.25, read_timeout_s=7)
    client = llm.client
    assert llm.client is client
    assert client.max_retries == 0
    assert client.api_key == "-"
    assert str(client.base_url) == "http://127.0.0.1:9/v1/"
    timeout = client.timeout
    assert timeout.connect == 1.25  # type: ignore[union-attr]
    assert timeout.read == 7  # type: ignore[union-attr]


async def test_aclose_closes_and_a_later_call_reopens() -> None:
    async with ArkModelLink(base_url="http://127.0.0.1:9/v1") as llm:
        client = llm.client
    assert client.is_closed()
    assert llm.client is not client
    await llm.aclose()
    await llm.aclose()  # idempotent


def test_a_new_event_loop_gets_a_new_client() -> None:
    llm = ArkModelLink(base_url="http://127.0.0.1:9/v1")

    async def grab() -> object:
        return llm.client

    first = asyncio.run(grab())
    second = asyncio.run(grab())
    assert first is not second
