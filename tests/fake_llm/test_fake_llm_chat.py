"""Chat completions through the official OpenAI client: stream shape, determinism, limits, tools."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import jsonschema
import openai

from fake_llm import FakeLLMServer
from fake_llm.generation import EOS_TOKEN_ID

MESSAGES: list[Any] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Tell me about the sea."},
]
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["C", "F"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}


async def test_stream_has_role_chunk_deltas_finish_chunk_and_usage_chunk(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="tgi", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]

    first, *middle, finish, usage = chunks
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert first.choices[0].delta.role == "assistant"
    assert first.choices[0].delta.content == ""
    assert middle and all(c.choices[0].delta.content for c in middle)
    assert all(c.choices[0].finish_reason is None for c in [first, *middle])
    assert finish.choices[0].finish_reason == "stop"
    assert finish.choices[0].delta.content is None
    assert finish.choices[0].model_extra["matched_stop"] == EOS_TOKEN_ID
    assert usage.choices == []
    assert usage.usage is not None
    assert usage.usage.completion_tokens == len(middle)
    assert 16 <= len(middle) <= 48
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + usage.usage.completion_tokens
    assert usage.usage.prompt_tokens > 0


async def test_usage_chunk_only_when_asked(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model="tgi", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


async def test_streamed_text_equals_non_streamed_text(client: openai.AsyncOpenAI) -> None:
    whole = await client.chat.completions.create(model="tgi", messages=MESSAGES)
    stream = await client.chat.completions.create(model="tgi", messages=MESSAGES, stream=True)
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    message = whole.choices[0].message
    assert whole.object == "chat.completion"
    assert message.role == "assistant"
    assert message.content and "".join(pieces) == message.content
    assert whole.choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == len(message.content.split())
    other = await client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "Something else entirely."}]
    )
    assert other.choices[0].message.content != message.content


async def test_max_tokens_truncates_with_length(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Go on. [[arkq:tokens=30]]"}]
    whole = await client.chat.completions.create(model="tgi", messages=messages, max_tokens=5)
    assert whole.choices[0].finish_reason == "length"
    assert whole.choices[0].model_extra["matched_stop"] is None
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    assert len((whole.choices[0].message.content or "").split()) == 5

    stream = await client.chat.completions.create(
        model="tgi", messages=messages, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


async def test_tokens_directive_sets_exact_length_and_is_invisible(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "Count [[arkq:tokens=7]] please."}]
    )
    content = result.choices[0].message.content or ""
    assert len(content.split()) == 7
    assert "arkq" not in content


async def test_stop_string_ends_the_answer_early(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Long one. [[arkq:tokens=40]]"}]
    full = (await client.chat.completions.create(model="tgi", messages=messages)).choices[0].message.content
    assert full
    stop = full.split()[5]
    cut = await client.chat.completions.create(model="tgi", messages=messages, stop=[stop])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].model_extra["matched_stop"] == stop
    assert cut.choices[0].message.content == full[: full.index(stop)]


async def test_reasoning_content_comes_before_the_answer(client: openai.AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Think first. [[arkq:reasoning=6 tokens=4]]"}]
    stream = await client.chat.completions.create(
        model="tgi", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    kinds: list[str] = []
    reasoning = content = ""
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if not chunk.choices:
            continue
        extra = chunk.choices[0].delta.model_extra or {}
        if extra.get("reasoning_content"):
            kinds.append("r")
            reasoning += extra["reasoning_content"]
        if chunk.choices[0].delta.content:
            kinds.append("c")
            content += chunk.choices[0].delta.content
    assert kinds == ["r"] * 6 + ["c"] * 4
    assert usage is not None and usage.completion_tokens == 10
    assert usage.model_extra["reasoning_tokens"] == 6

    whole = await client.chat.completions.create(model="tgi", messages=messages)
    message = whole.choices[0].message
    assert message.content == content
    assert message.model_extra["reasoning_content"] == reasoning


async def test_tool_call_streams_header_then_argument_fragments(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="tgi",
        messages=[{"role": "user", "content": "Weather in Oslo?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    calls = []
    finish = None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        if delta.tool_calls:
            calls.extend(delta.tool_calls)
        finish = chunk.choices[0].finish_reason or finish
    head, *fragments = calls
    assert head.id and head.id.startswith("call_")
    assert head.type == "function"
    assert head.function is not None and head.function.name == "get_weather"
    assert head.function.arguments == ""
    assert len(fragments) >= 3
    assert all(f.index == 0 and f.id is None and f.function and f.function.name is None for f in fragments)
    arguments = json.loads("".join(f.function.arguments or "" for f in fragments if f.function))
    jsonschema.validate(arguments, WEATHER_TOOL["function"]["parameters"])
    assert finish == "tool_calls"


async def test_tool_call_non_streamed(client: openai.AsyncOpenAI) -> None:
    result = await client.chat.completions.create(
        model="tgi", messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER_TOOL]
    )
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    jsonschema.validate(json.loads(call.function.arguments), WEATHER_TOOL["function"]["parameters"])  # type: ignore[union-attr]


async def test_tool_choice_none_and_named(client: openai.AsyncOpenAI) -> None:
    other = {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
    plain = await client.chat.completions.create(
        model="tgi", messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none"
    )
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content
    named = await client.chat.completions.create(
        model="tgi",
        messages=MESSAGES,
        tools=[WEATHER_TOOL, other],
        tool_choice={"type": "function", "function": {"name": "noop"}},
    )
    assert named.choices[0].message.tool_calls[0].function.name == "noop"  # type: ignore[index,union-attr]


async def test_raw_wire_format_matches_sglang(srv: FakeLLMServer) -> None:
    body = {
        "model": "my-model",
        "messages": [{"role": "user", "content": "hi [[arkq:tokens=2]]"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "rid": "req-42",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{srv.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        raw = (await response.read()).decode()
    events = raw.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert [p["id"] for p in payloads] == ["req-42"] * 5
    assert all(p["model"] == "my-model" for p in payloads)
    role, token1, token2, finish, usage = payloads
    assert role["choices"][0]["delta"] == {"reasoning_content": None, "role": "assistant", "content": ""}
    assert set(token1["choices"][0]) == {"index", "delta", "logprobs", "finish_reason", "matched_stop"}
    assert set(token2["choices"][0]["delta"]) == {"reasoning_content", "content"}
    assert finish["choices"][0]["delta"] == {"reasoning_content": None}
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in finish
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 2
    assert set(usage["usage"]) == {
        "prompt_tokens",
        "total_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "reasoning_tokens",
    }


async def test_models_health_and_model_info(srv: FakeLLMServer) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{srv.url}/health") as health:
            assert health.status == 200
        async with http.get(f"{srv.url}/health_generate") as health:
            assert health.status == 200
        for path in ("/get_model_info", "/model_info"):  # the newer name, which the SGLang router asks first
            async with http.get(f"{srv.url}{path}") as info:
                assert (await info.json())["model_path"] == "tgi"
        for path in ("/get_server_info", "/server_info"):
            async with http.get(f"{srv.url}{path}") as info:
                server = await info.json()
                assert server["served_model_name"] == "tgi" and server["context_length"] == 32768
                # A path would make the SGLang router fetch the model's tokenizer from the hub.
                assert "model_path" not in server and "tokenizer_path" not in server
        async with http.get(f"{srv.base_url}/models/nope") as missing:
            assert missing.status == 404
    async with openai.AsyncOpenAI(base_url=srv.base_url, api_key="-", max_retries=0) as client:
        models = await client.models.list()
        (card,) = models.data
        assert card.id == "tgi" and card.owned_by == "sglang"
        assert card.model_extra["max_model_len"] == 32768
