"""OpenAI's Chat Completions, translated: a request becomes an arkq job, a job's events become
`chat.completion.chunk`s, its result a `chat.completion`.

What arkq cannot honour is refused by name (400), never dropped: a client asking for `n=3` or logprobs
must learn it will not get them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from arkq.contract import DoneEvent, Event, JobResult, ToolCallEvent
from gateway.errors import ApiError

#: The request fields arkq takes (beyond `stream` and `stream_options`).
ACCEPTED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "response_format",
        "tools",
        "tool_choice",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "metadata",
        "user",  # an end-user ID for the operator's records: kept in the job's metadata
    }
)
#: Fields that are harmless at these values (they ask for what arkq does anyway).
DEFAULTS_ONLY: dict[str, tuple[Any, ...]] = {
    "n": (1, None),
    "logprobs": (False, None),
    "store": (False, None),
    "parallel_tool_calls": (True, None),
}
#: Message fields a client may send, and the ones it may send empty (an echoed assistant message).
MESSAGE_FIELDS = frozenset({"role", "content", "tool_calls", "tool_call_id", "name"})
EMPTY_MESSAGE_FIELDS = frozenset({"refusal", "audio", "function_call", "annotations", "reasoning_content"})


@dataclass
class ChatCall:
    """A chat completion request, as arkq will run it."""

    enqueue: dict[str, Any]
    model: str
    stream: bool = False
    include_usage: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)


def parse_chat_request(body: Any, *, default_model: str, stream_allowed: bool = True) -> ChatCall:
    """The job for an OpenAI Chat Completions request body, or ApiError(400) naming the parameter."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unsupported = sorted(
        name
        for name, value in body.items()
        if name not in ACCEPTED
        and name not in {"stream", "stream_options"}
        and (name not in DEFAULTS_ONLY or value not in DEFAULTS_ONLY[name])
    )
    stream_options = body.get("stream_options")
    if unsupported:
        raise ApiError(
            400,
            f"arkq does not support {', '.join(unsupported)}" + (" (only n=1)" if "n" in unsupported else ""),
            param=unsupported[0],
            code="unsupported_parameter",
        )
    model = body.get("model", default_model)
    if model is None:
        model = default_model
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model: must be a non-empty string", param="model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, "stream: must be true or false", param="stream")
    include_usage = False
    if body.get("stream_options") is not None:
        if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage"}:
            raise ApiError(400, "stream_options: only include_usage is supported", param="stream_options")
        include_usage = bool(stream_options.get("include_usage"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    enqueue: dict[str, Any] = {
        "messages": _messages(body.get("messages")),
        "model": model,
        "max_tokens": max_tokens,
        "temperature": body.get("temperature"),
        "tools": body.get("tools"),
    }
    for name in ("tool_choice", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"):
        if body.get(name) is not None:
            enqueue[name] = body[name]
    _response_format(body.get("response_format"), enqueue)
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(400, "metadata: must be an object", param="metadata")
    if body.get("user") is not None:
        metadata = {**metadata, "user": body["user"]}
    return ChatCall(enqueue, model, bool(stream) and stream_allowed, include_usage, metadata)


def _messages(messages: Any) -> Any:
    """OpenAI messages as arkq takes them: text parts joined, `developer` as `system`; anything arkq
    would have to drop (an image, an audio part, a field it does not know) is refused by name."""
    if not isinstance(messages, list):
        return messages  # the contract says what is wrong with it
    converted = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            converted.append(message)
            continue
        where = f"messages.{index}"
        unknown = sorted(
            name
            for name, value in message.items()
            if name not in MESSAGE_FIELDS and not (name in EMPTY_MESSAGE_FIELDS and not value)
        )
        if unknown:
            raise ApiError(400, f"{where}: arkq does not support {', '.join(unknown)}", param="messages")
        plain = {k: v for k, v in message.items() if k in MESSAGE_FIELDS - {"name"}}
        if message.get("name") is not None:
            raise ApiError(400, f"{where}.name: arkq does not support named participants", param="messages")
        if plain.get("role") == "developer":
            plain["role"] = "system"
        content = plain.get("content")
        if isinstance(content, list):
            plain["content"] = _text_parts(content, where)
        converted.append(plain)
    return converted


def _text_parts(parts: list[Any], where: str) -> str:
    texts = []
    for index, part in enumerate(parts):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ApiError(
                400, f"{where}.content.{index}: only text parts are supported, not {kind!r}", param="messages"
            )
        texts.append(part["text"])
    return "".join(texts)


def _response_format(value: Any, enqueue: dict[str, Any]) -> None:
    if value is None:
        return
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return
    if kind == "json_object":
        enqueue["json_object"] = True
    elif kind == "json_schema":
        enqueue["json_schema"] = value
    else:
        raise ApiError(
            400,
            'response_format: must be {"type": "text"}, {"type": "json_object"} or '
            '{"type": "json_schema", "json_schema": {...}}',
            param="response_format",
        )


# --- Answers -----------------------------------------------------------------------------------------


def completion_id(job_id: str) -> str:
    return f"chatcmpl-{job_id}"


def completion(result: JobResult, *, model: str) -> dict[str, Any]:
    """The `chat.completion` object for a finished job."""
    message: dict[str, Any] = {"role": "assistant", "content": result.text or None}
    if result.tool_calls:
        message["tool_calls"] = result.tool_calls
    elif not result.text:
        message["content"] = ""
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
    return {
        "id": completion_id(result.job_id),
        "object": "chat.completion",
        "created": int(result.timings.enqueued_at),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": result.finish_reason, "logprobs": None}
        ],
        "usage": result.usage,
    }


class ChunkWriter:
    """The `chat.completion.chunk` objects for one job's events, in OpenAI's order: a first chunk with
    the role, one per delta, one with the finish reason, and (when asked) one with the usage."""

    def __init__(self, job_id: str, model: str, *, include_usage: bool):
        self.id = completion_id(job_id)
        self.model = model
        self.created = int(time.time())
        self.include_usage = include_usage
        self._opened = False

    def _chunk(self, delta: Mapping[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": []
            if delta is None
            else [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def chunks(self, event: Event) -> list[dict[str, Any]]:
        """The chunks `event` adds (none for events OpenAI has no chunk for)."""
        out = []
        if not self._opened and event.type in {"token", "reasoning", "tool_call", "done"}:
            self._opened = True
            out.append(self._chunk({"role": "assistant", "content": ""}))
        if event.type == "token":
            out.append(self._chunk({"content": event.text}))
        elif event.type == "reasoning":
            out.append(self._chunk({"reasoning_content": event.text}))
        elif isinstance(event, ToolCallEvent):
            call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
            if event.id is not None:
                call["id"], call["type"] = event.id, "function"
            if event.name is not None:
                call["function"]["name"] = event.name
            out.append(self._chunk({"tool_calls": [call]}))
        elif isinstance(event, DoneEvent):
            out.append(self._chunk({}, event.finish_reason))
            if self.include_usage:
                usage = self._chunk(None)
                usage["usage"] = event.usage
                out.append(usage)
        return out
