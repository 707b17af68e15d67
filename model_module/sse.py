"""Turn the lines of an OpenAI-compatible chat completion SSE stream into typed events.

The SDK's typed chunks cost about six times more CPU per chunk than one `json.loads` of the raw line,
and a worker must keep up with a whole GPU's output on one core, so the link reads raw lines and this
decoder does what the SDK's stream would: stop at `[DONE]`, raise for an in-stream `{"error": ...}`
event, and pick content, reasoning, tool-call fragments, finish_reason and usage out of each chunk. It
does no I/O, so every wire shape can be tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from model_module.errors import ModelError, from_stream_error
from model_module.events import ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta

_NOTHING: tuple[StreamEvent, ...] = ()
_loads = json.loads
#: The fields SSE defines; a chat completion needs only `data`, the others are read and ignored.
_SSE_FIELDS = frozenset({"data", "event", "id", "retry"})
#: How much of the first unknown line is kept for the warning that reports it.
UNKNOWN_LINE_PREVIEW = 120


class ChunkDecoder:
    """Feed it the stream's lines in order; it returns each event's deltas once the event is complete.

    Events are dispatched on the blank line that ends them, as the SSE format defines; several `data:`
    lines of one event are joined with newlines. `done` turns true at `[DONE]`; after it, lines are
    ignored. `finish_reason` and `usage` keep the last values seen, since SGLang sends finish_reason in
    its own chunk and usage in a last chunk with no choices.

    Lines that are not SSE at all (no field SSE defines, not a `:` comment) are skipped as the format
    says, but counted in `unknown`, with the first kept (truncated) in `first_unknown`: a proxy or a
    server that mangles its stream would otherwise lose output without a trace.
    """

    __slots__ = ("_data", "done", "finish_reason", "first_unknown", "unknown", "usage")

    def __init__(self) -> None:
        self._data: str | None = None
        self.done = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.unknown = 0
        self.first_unknown: str | None = None

    def feed(self, line: str) -> Sequence[StreamEvent]:
        """The deltas completed by `line` (usually none or one). Raises ModelError for an error event."""
        if line:
            if line.startswith("data:"):
                value = line[6:] if line.startswith("data: ") else line[5:]
                self._data = value if self._data is None else f"{self._data}\n{value}"
            elif line[0] != ":" and line.partition(":")[0] not in _SSE_FIELDS:
                self._unknown_line(line)
            # comments (":"), "event:", "id:" and "retry:" lines carry nothing a chat completion needs
            return _NOTHING
        data, self._data = self._data, None
        if data is None or self.done:
            return _NOTHING
        return self._dispatch(data)

    def _unknown_line(self, line: str) -> None:
        self.unknown += 1
        if self.first_unknown is None:
            self.first_unknown = line[:UNKNOWN_LINE_PREVIEW]

    def flush(self) -> Sequence[StreamEvent]:
        """Dispatch a last event that the server did not end with a blank line."""
        return self.feed("")

    def _dispatch(self, data: str) -> Sequence[StreamEvent]:
        if data.startswith("[DONE]"):
            self.done = True
            return _NOTHING
        try:
            chunk = _loads(data)
        except ValueError as exc:
            raise ModelError("stream", f"undecodable event in the response stream: {data[:200]!r}") from exc
        if type(chunk) is not dict:
            raise ModelError("stream", f"unexpected event in the response stream: {data[:200]!r}")
        error = chunk.get("error")
        if error:
            raise from_stream_error(error)
        usage = chunk.get("usage")
        if usage:
            self.usage = usage
        choices = chunk.get("choices")
        if not choices:
            return _NOTHING
        try:
            return self._deltas(choices)
        except (AttributeError, TypeError) as exc:  # a chunk of the wrong shape, not a bug of ours
            raise ModelError("stream", f"malformed chunk in the response stream: {data[:200]!r}") from exc

    def _deltas(self, choices: list[dict[str, Any]]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for choice in choices:
            delta = choice.get("delta")
            if delta:
                reasoning = delta.get("reasoning_content")
                if reasoning:
                    events.append(ReasoningDelta(_text(reasoning)))
                content = delta.get("content")
                if content:
                    events.append(TextDelta(_text(content)))
                tool_calls = delta.get("tool_calls")
                if tool_calls:
                    events.extend(_tool_call_deltas(tool_calls))
            finish_reason = choice.get("finish_reason")
            if finish_reason:
                self.finish_reason = finish_reason
        return events


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"text delta is {type(value).__name__}, not str")
    return value


def _tool_call_deltas(tool_calls: list[dict[str, Any]]) -> list[ToolCallDelta]:
    deltas = []
    for position, call in enumerate(tool_calls):
        function = call.get("function") or {}
        index = call.get("index")
        deltas.append(
            ToolCallDelta(
                index=index if isinstance(index, int) else position,
                id=call.get("id") or None,
                name=function.get("name") or None,
                arguments=function.get("arguments") or "",
            )
        )
    return deltas
