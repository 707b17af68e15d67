"""The raw SSE decoder against the chunk shapes SGLang sends (see FIELD-NOTES)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from model_module.errors import ModelError
from model_module.events import ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from model_module.sse import UNKNOWN_LINE_PREVIEW, ChunkDecoder


def chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None, **extra: Any) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": choices, **extra})


def decode(*lines: str) -> tuple[list[StreamEvent], ChunkDecoder]:
    decoder = ChunkDecoder()
    events: list[StreamEvent] = []
    for line in lines:
        events.extend(decoder.feed(line))
    events.extend(decoder.flush())
    return events, decoder


def sse(*payloads: str) -> list[str]:
    """Lines of a stream where every event is one data line followed by a blank line."""
    lines: list[str] = []
    for payload in payloads:
        lines += [payload, ""]
    return lines


USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def test_sglang_text_stream() -> None:
    events, decoder = decode(
        *sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hello"}),
            chunk({"content": ", wor"}),  # --stream-interval: several tokens per chunk
            chunk({"content": "ld"}),
            chunk({}, finish_reason="stop", matched_stop=2),
            chunk(None, usage=USAGE),
            "data: [DONE]",
        )
    )
    assert events == [TextDelta("Hello"), TextDelta(", wor"), TextDelta("ld")]
    assert decoder.done
    assert decoder.finish_reason == "stop"
    assert decoder.usage == USAGE


def test_reasoning_then_content() -> None:
    events, _ = decode(
        *sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Let me think"}),
            chunk({"reasoning_content": " more.", "content": None}),
            chunk({"content": "42"}),
            "data: [DONE]",
        )
    )
    assert events == [ReasoningDelta("Let me think"), ReasoningDelta(" more."), TextDelta("42")]


def test_tool_call_fragments() -> None:
    function = {"name": "get_weather", "arguments": ""}
    first = {"index": 0, "id": "call_1", "type": "function", "function": function}
    later = {"index": 0, "function": {"arguments": '{"city": '}}
    last = {"index": 0, "function": {"arguments": '"Paris"}'}}
    events, decoder = decode(
        *sse(
            chunk({"role": "assistant", "content": ""}),
            chunk({"tool_calls": [first]}),
            chunk({"tool_calls": [later]}),
            chunk({"tool_calls": [last]}),
            chunk({}, finish_reason="tool_calls"),
            "data: [DONE]",
        )
    )
    assert events == [
        ToolCallDelta(0, "call_1", "get_weather", ""),
        ToolCallDelta(0, None, None, '{"city": '),
        ToolCallDelta(0, None, None, '"Paris"}'),
    ]
    assert decoder.finish_reason == "tool_calls"


def test_in_stream_error_raises_classified_error() -> None:
    error = {"object": "error", "message": "The request queue is full.", "param": None, "code": 503}
    decoder = ChunkDecoder()
    assert decoder.feed(chunk({"content": "a"})) == ()
    assert decoder.feed("") == [TextDelta("a")]
    decoder.feed("data: " + json.dumps({"error": error}))
    with pytest.raises(ModelError) as caught:
        decoder.feed("")
    failure = caught.value
    assert (failure.kind, failure.status_code, failure.retryable) == ("server_error", 503, True)


def test_lines_after_done_are_ignored() -> None:
    events, decoder = decode(*sse("data: [DONE]", chunk({"content": "late"}), "data: {not json"))
    assert events == []
    assert decoder.done


def test_no_done_means_not_done() -> None:
    events, decoder = decode(*sse(chunk({"content": "partial"})))
    assert events == [TextDelta("partial")]
    assert not decoder.done


def test_sse_framing_variants() -> None:
    events, decoder = decode(
        ": keep-alive comment",
        "event: message",
        'data:{"choices":[{"index":0,"delta":{"content":"no space"}}]}',
        "",
        "id: 7",
        'data: {"choices":[{"index":0,',
        'data: "delta":{"content":"two lines"}}]}',
        "",
        "data: [DONE]",  # no blank line after it: flush dispatches it
    )
    assert events == [TextDelta("no space"), TextDelta("two lines")]
    assert decoder.done


def test_undecodable_event_is_a_stream_error() -> None:
    decoder = ChunkDecoder()
    decoder.feed("data: {broken")
    with pytest.raises(ModelError) as caught:
        decoder.feed("")
    assert caught.value.kind == "stream"
    decoder = ChunkDecoder()
    decoder.feed("data: [1, 2]")
    with pytest.raises(ModelError):
        decoder.feed("")


@pytest.mark.parametrize(
    "chunk",
    [
        '{"choices": ["not a dict"]}',
        '{"choices": [{"delta": "text"}]}',
        '{"choices": [{"delta": {"content": 5}}]}',
        '{"choices": [{"delta": {"tool_calls": ["x"]}}]}',
    ],
)
def test_chunks_of_the_wrong_shape_are_stream_errors(chunk: str) -> None:
    decoder = ChunkDecoder()
    with pytest.raises(ModelError) as caught:
        decoder.feed(f"data: {chunk}")
        decoder.feed("")
    assert caught.value.kind == "stream"


def test_sse_fields_and_comments_are_not_unknown() -> None:
    fields = [": comment", "event: message", "id: 3", "retry: 1000", "data", "event"]
    events, decoder = decode(*fields, chunk({"content": "a"}), "")
    assert events == [TextDelta("a")]
    assert (decoder.unknown, decoder.first_unknown) == (0, None)


def test_lines_that_are_not_sse_are_counted_and_the_first_kept_short() -> None:
    first = "<html>" + "x" * 500
    events, decoder = decode(first, chunk({"content": "a"}), "", "HTTP/1.1 200 OK", "Data: upper case", "")
    assert events == [TextDelta("a")]  # skipped, as SSE says, without losing the events around them
    assert decoder.unknown == 3
    assert decoder.first_unknown == first[:UNKNOWN_LINE_PREVIEW]
