"""Byte-exact SGLang response shapes.

SGLang serialises the hot-path stream chunks (role, content, reasoning, finish) with a
msgspec struct that omits ``role``/``content`` when unset but always carries
``reasoning_content`` (so the OpenAI SDK can read it), while tool-call, usage and
non-streamed responses go through pydantic and keep every ``null``. Error bodies are flat
``{"object": "error", ...}`` objects; inside a stream they are wrapped in ``{"error": ...}``
and produced by ``json.dumps`` (hence the spaces).

Content chunks are built by concatenating a per-stream prefix and suffix around the
JSON-escaped token: only the token changes from chunk to chunk, and escaping a short
string is far cheaper than serialising a whole chunk object.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from http import HTTPStatus
from typing import Any

__all__ = [
    "DONE",
    "ChunkEncoder",
    "completion_body",
    "error_body",
    "model_card",
    "stream_error_event",
    "usage_dict",
]

DONE = b"data: [DONE]\n\n"

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@lru_cache(maxsize=4096)
def _escaped(text: str) -> bytes:
    """JSON string literal for ``text``; vocabulary tokens repeat, so cache them."""
    return _compact(text).encode()


def escape(text: str) -> bytes:
    if len(text) <= 16:
        return _escaped(text)
    return _compact(text).encode()


def usage_dict(prompt_tokens: int, completion_tokens: int, reasoning_tokens: int = 0) -> dict[str, Any]:
    """SGLang's ``UsageInfo`` (field order as declared there)."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
        "reasoning_tokens": reasoning_tokens,
    }


def error_body(message: str, err_type: str, code: int) -> dict[str, Any]:
    """SGLang's ``ErrorResponse`` as sent with an HTTP error status."""
    return {"object": "error", "message": message, "type": err_type, "param": None, "code": code}


def stream_error_event(message: str, code: int) -> bytes:
    """An error that surfaces after the 200 was sent (scheduler abort with a status code)."""
    try:
        name = HTTPStatus(code).name
    except ValueError:
        name = str(code)
    payload = json.dumps({"error": error_body(message, name, code)})
    return b"data: " + payload.encode() + b"\n\n"


class ChunkEncoder:
    """Serialises the chunks of one stream; fixed fields are rendered once."""

    __slots__ = ("_content_pre", "_head", "_reasoning_pre", "_tail")

    def __init__(self, chunk_id: str, model: str, created: int | None = None) -> None:
        created = int(time.time()) if created is None else created
        head = (
            b'{"id":' + escape(chunk_id) + b',"object":"chat.completion.chunk","created":'
            + str(created).encode() + b',"model":' + escape(model) + b","
        )  # fmt: skip
        self._head = head
        choice = b"data: " + head + b'"choices":[{"index":0,"delta":{"reasoning_content":'
        self._content_pre = choice + b'null,"content":'
        self._reasoning_pre = choice
        self._tail = b'},"logprobs":null,"finish_reason":null,"matched_stop":null}]}\n\n'

    def role(self) -> bytes:
        return self._reasoning_pre + b'null,"role":"assistant","content":""' + self._tail

    def content(self, token: str) -> bytes:
        return self._content_pre + escape(token) + self._tail

    def content_json(self, token_json: bytes) -> bytes:
        """A content chunk for a token already JSON-escaped (:func:`escape`)."""
        return self._content_pre + token_json + self._tail

    def reasoning(self, token: str) -> bytes:
        return self._reasoning_pre + escape(token) + self._tail

    def finish(self, reason: str, matched_stop: int | str | None) -> bytes:
        matched = b"null" if matched_stop is None else _compact(matched_stop).encode()
        return (
            self._reasoning_pre + b'null},"logprobs":null,"finish_reason":' + escape(reason)
            + b',"matched_stop":' + matched + b"}]}\n\n"
        )  # fmt: skip

    def _tool_call(self, call: dict[str, Any]) -> bytes:
        delta = {"role": None, "content": None, "reasoning_content": None, "tool_calls": [call]}
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None, "matched_stop": None}
        return b"data: " + self._head + b'"choices":[' + _compact(choice).encode() + b'],"usage":null}\n\n'

    def tool_call_start(self, call_id: str, name: str) -> bytes:
        return self._tool_call(
            {"id": call_id, "index": 0, "type": "function", "function": {"name": name, "arguments": ""}}
        )

    def tool_call_args(self, fragment: str) -> bytes:
        return self._tool_call(
            {"id": None, "index": 0, "type": "function", "function": {"name": None, "arguments": fragment}}
        )

    def usage(self, prompt_tokens: int, completion_tokens: int, reasoning_tokens: int) -> bytes:
        usage = _compact(usage_dict(prompt_tokens, completion_tokens, reasoning_tokens)).encode()
        return b"data: " + self._head + b'"choices":[],"usage":' + usage + b"}\n\n"


def completion_body(
    *,
    chunk_id: str,
    model: str,
    content: str | None,
    reasoning: str | None,
    tool_calls: list[dict[str, Any]] | None,
    finish_reason: str,
    matched_stop: int | str | None,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A non-streamed ``chat.completion`` (SGLang's ``ChatCompletionResponse``)."""
    return {
        "id": chunk_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": content or None,
                    "reasoning_content": reasoning or None,
                    "tool_calls": tool_calls,
                },
                "logprobs": None,
                "finish_reason": finish_reason,
                "matched_stop": matched_stop,
            }
        ],
        "usage": usage,
        "metadata": {"weight_version": "default"},
    }


def model_card(model: str, context_length: int, created: int) -> dict[str, Any]:
    return {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "sglang",
        "root": model,
        "parent": None,
        "max_model_len": context_length,
    }


def dumps(value: Any) -> str:
    """Compact JSON, as FastAPI/ORJSON responses are."""
    return _compact(value)
