"""Parsing and validating ``/v1/chat/completions`` bodies the way SGLang does.

SGLang rejects requests at three layers with different error ``type`` strings: pydantic
request validation ("Bad Request"), ``OpenAIServingChat._validate_request``
("BadRequestError") and the tokenizer manager's length checks ("BadRequestError").
Clients sometimes branch on those messages (context overflow, bad tool schema), so the
emulator reproduces the same checks in the same order with the same wording.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal

from arkq.errors import ArkqError

from .json_instances import SchemaError, check_schema

__all__ = ["ChatRequest", "EmulatedApiError", "ToolSpec", "parse_chat_request"]

ResponseKind = Literal["text", "json_object", "json_schema"]


class EmulatedApiError(ArkqError):
    """A request that ends in an HTTP error with SGLang's flat error body."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        err_type: str = "BadRequestError",
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.headers = headers
        self.body = body  # replaces the standard error body (the 401 has its own shape)


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Any  # JSON schema of the arguments, or None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """The parts of a chat request the emulator acts on."""

    model: str
    texts: tuple[str, ...]  # text of every message, directives included
    stream: bool
    include_usage: bool
    max_tokens: int | None
    stop: tuple[str, ...]
    rid: str | None
    response_kind: ResponseKind
    schema: Any
    tool: ToolSpec | None
    tools_text: str  # the tool definitions, for the prompt-size estimate
    continue_final_message: bool = False
    #: With continue_final_message, the final assistant message's text: the answer goes on from it
    #: (that message is not in ``texts``).
    prefix: str | None = None


def _validation_error(
    loc: tuple[Any, ...], msg: str, value: Any, kind: str = "value_error"
) -> EmulatedApiError:
    """Mimic FastAPI's RequestValidationError as SGLang re-labels it (400 "Bad Request")."""
    error = {"type": kind, "loc": ("body", *loc), "msg": msg, "input": value}
    message = f"1 validation error:\n  {error!r} {[error]!r}"
    return EmulatedApiError(message, err_type=HTTPStatus.BAD_REQUEST.phrase)


def _message_text(content: Any, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict):
                text = part.get("text") if part.get("type") in ("text", "thinking", "reasoning") else None
                if isinstance(text, str):
                    parts.append(text)
            else:
                loc = ("messages", index, "content")
                raise _validation_error(loc, "Input should be a valid list", content)
        return " ".join(parts)
    raise _validation_error(("messages", index, "content"), "Input should be a valid string", content)


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _validation_error((key,), "Input should be a valid integer", value, "int_type")
    return value


def _parse_tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise _validation_error(("tools",), "Input should be a valid list", tools, "list_type")
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _validation_error(("tools", i, "function"), "Field required", tool, "missing")
    tool_choice = body.get("tool_choice")
    if tool_choice is None:
        tool_choice = "auto" if tools else "none"
    if isinstance(tool_choice, str) and tool_choice not in ("auto", "required", "none"):
        raise _validation_error(
            ("tool_choice",), "Input should be 'auto', 'required' or 'none'", tool_choice, "literal_error"
        )
    return tools, tool_choice


def _choose_tool(tools: list[dict[str, Any]], tool_choice: Any) -> ToolSpec | None:
    """Replicates ``_validate_request``'s tool checks, then picks the tool to call."""
    if isinstance(tool_choice, str) and tool_choice == "required" and not tools:
        raise EmulatedApiError("Tools cannot be empty if tool choice is set to required.")
    named: str | None = None
    if not isinstance(tool_choice, str):
        if not tools:
            raise EmulatedApiError("Tools cannot be empty if tool choice is set to a specific tool.")
        function = tool_choice.get("function") if isinstance(tool_choice, dict) else None
        named = function.get("name") if isinstance(function, dict) else None
        if not any(t["function"]["name"] == named for t in tools):
            raise EmulatedApiError(f"Tool '{named}' not found in tools list.")
    for i, tool in enumerate(tools):
        parameters = tool["function"].get("parameters")
        if parameters is None:
            continue
        try:
            check_schema(parameters)
        except SchemaError as exc:
            raise EmulatedApiError(f"Tool {i} function has invalid 'parameters' schema: {exc}") from None
    if not tools or tool_choice == "none":
        return None
    chosen = next(t for t in tools if named is None or t["function"]["name"] == named)
    return ToolSpec(name=chosen["function"]["name"], parameters=chosen["function"].get("parameters"))


def _parse_response_format(body: dict[str, Any]) -> tuple[ResponseKind, Any]:
    fmt = body.get("response_format")
    if fmt is None:
        return "text", None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        msg = "Input should be 'text', 'json_object' or 'json_schema'"
        raise _validation_error(("response_format",), msg, fmt, "literal_error")
    kind: ResponseKind = fmt["type"]
    if kind != "json_schema":
        return kind, None
    spec = fmt.get("json_schema")
    if spec is None and isinstance(fmt.get("schema"), dict):  # SGLang also accepts a bare "schema"
        spec = {"name": fmt["schema"].get("title", "Schema"), "schema": fmt["schema"]}
    if spec is None:
        raise EmulatedApiError("schema_ is required for json_schema response format request.")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise _validation_error(("response_format", "json_schema", "name"), "Field required", spec, "missing")
    schema = spec.get("schema")
    if schema is None:
        raise EmulatedApiError("schema_ is required for json_schema response format request.")
    if not isinstance(schema, dict):
        loc = ("response_format", "json_schema", "schema")
        raise _validation_error(loc, "Input should be a valid dictionary", schema, "dict_type")
    return kind, schema


def parse_chat_request(body: Any, *, context_length: int) -> ChatRequest:
    """Validate ``body`` and extract what generation needs; raises :class:`EmulatedApiError`."""
    if not isinstance(body, dict):
        raise _validation_error((), "Input should be a valid dictionary", body, "dict_type")
    messages = body.get("messages")
    if messages is None:
        raise _validation_error(("messages",), "Field required", body, "missing")
    if not isinstance(messages, list):
        raise _validation_error(("messages",), "Input should be a valid list", messages, "list_type")
    texts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _validation_error(("messages", i, "role"), "Field required", message, "missing")
        texts.append(_message_text(message.get("content"), i))

    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _validation_error(("stream",), "Input should be a valid boolean", stream, "bool_type")
    n = _optional_int(body, "n")
    max_tokens = _optional_int(body, "max_completion_tokens") or _optional_int(body, "max_tokens")
    tools, tool_choice = _parse_tools(body)
    kind, schema = _parse_response_format(body)
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(s for s in stop or () if isinstance(s, str) and s)
    stream_options = body.get("stream_options")
    include_usage = bool(stream_options.get("include_usage")) if isinstance(stream_options, dict) else False
    continue_final = body.get("continue_final_message", False)
    if not isinstance(continue_final, bool):
        raise _validation_error(
            ("continue_final_message",), "Input should be a valid boolean", continue_final, "bool_type"
        )
    prefix: str | None = None
    last = messages[-1] if messages else None
    if continue_final and isinstance(last, dict) and last.get("role") == "assistant":
        # As OpenAIServingChat._handle_last_assistant_message: only text content is continued; it leaves
        # the conversation and follows the generation prompt. Without the flag SGLang makes a final
        # assistant message a user turn, which changes nothing here (only the texts are used).
        content = last.get("content")
        if isinstance(content, str):
            prefix = content
            texts.pop()
    rid = body.get("rid")
    if rid is not None and not isinstance(rid, str):
        raise EmulatedApiError("Only a single string `rid` is supported by the emulator.")
    model = body.get("model")

    # Same order as OpenAIServingChat._validate_request.
    if not messages:
        raise EmulatedApiError("Messages cannot be empty.")
    tool = _choose_tool(tools, tool_choice)
    if max_tokens and max_tokens > context_length:
        raise EmulatedApiError(
            f"max_completion_tokens is too large: {max_tokens}."
            f"This model supports at most {context_length} completion tokens."
        )
    if n is not None and n != 1:
        raise EmulatedApiError("The emulator only supports n=1.")

    return ChatRequest(
        model=model if isinstance(model, str) else "default",
        texts=tuple(texts),
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        stop=stops,
        rid=rid,
        response_kind=kind,
        schema=schema,
        tool=tool,
        tools_text=json.dumps(tools) if tools else "",
        continue_final_message=continue_final,
        prefix=prefix,
    )
