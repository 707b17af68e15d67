"""The job and event contract: what producers ask for, what workers stream back, what they store.

A job is a `GenerationRequest`, carried in arq's job envelope (`arkq.envelope`). While it runs, the
worker appends every event to the job's replay log (a Redis list, so an event's index in it is its
`seq`) and publishes the same JSON on the job's pub/sub channel (`arkq.keys`). When it ends, the
`JobResult` is stored before the terminal event goes out, so whoever sees `done` can read it at once.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    computed_field,
    field_validator,
    model_validator,
)

from arkq.messages import AnyMessage

#: OpenAI's limit on stop sequences.
MAX_STOP_SEQUENCES = 4
JSON_SCHEMA_SHAPE = '{"type": "json_schema", "json_schema": {"name": "...", "schema": {...}}}'


class GenerationRequest(BaseModel):
    """What a producer asks for. Unset sampling fields fall back to the worker's `llm.*` settings."""

    model_config = ConfigDict(extra="forbid")

    messages: list[AnyMessage] = Field(min_length=1)
    json_schema: dict[str, Any] | None = None
    # Strict: a bool or a numeric string is a caller's mistake, not something to coerce.
    max_tokens: StrictInt | None = Field(None, gt=0)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    model: str | None = Field(None, min_length=1)
    #: OpenAI tool definitions; the server may answer with tool calls (SGLang's --tool-call-parser).
    tools: list[dict[str, Any]] | None = None
    #: OpenAI's `tool_choice`: "none", "auto", "required", or {"type": "function", "function": {"name"}}.
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    #: Ask for a JSON object without a schema (OpenAI's `response_format: {"type": "json_object"}`).
    json_object: StrictBool = False
    # Sampling, as OpenAI defines each; unset ones are not sent, and the server's defaults apply.
    top_p: StrictFloat | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def sampling(self) -> dict[str, Any]:
        """The request's own OpenAI parameters beyond messages, model, max_tokens and temperature,
        as the server takes them; what is unset is left out."""
        params: dict[str, Any] = {
            name: value
            for name in ("tool_choice", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
            if (value := getattr(self, name)) is not None
        }
        if self.json_object:
            params["response_format"] = {"type": "json_object"}
        return params

    @field_validator("json_schema")
    @classmethod
    def _documented_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        if value.get("type") != "json_schema":
            hint = " (a bare JSON Schema? wrap it)" if "properties" in value or value.get("type") else ""
            raise ValueError(f"must have the shape {JSON_SCHEMA_SHAPE}{hint}")
        inner = value.get("json_schema")
        if not isinstance(inner, Mapping):
            raise ValueError(f"'json_schema' inside it must be an object: {JSON_SCHEMA_SHAPE}")
        if not isinstance(inner.get("name"), str) or not inner["name"]:
            raise ValueError("json_schema.name must be a non-empty string")
        if not isinstance(inner.get("schema"), Mapping):
            raise ValueError("json_schema.schema must be a JSON Schema object (a dict)")
        return value

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_STOP_SEQUENCES:
            raise ValueError(f"must be a string or a list of 1 to {MAX_STOP_SEQUENCES} strings")
        return value

    @model_validator(mode="after")
    def _one_response_format(self) -> Self:
        if self.json_object and self.json_schema is not None:
            raise ValueError("json_object and json_schema: ask for one response format, not both")
        return self

    @field_validator("tools")
    @classmethod
    def _function_tools(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for index, tool in enumerate(value or []):
            function = tool.get("function")
            named = isinstance(function, Mapping) and bool(function.get("name"))
            if tool.get("type") != "function" or not named:
                raise ValueError(
                    f'tool {index} must look like {{"type": "function", "function": {{"name": ..., '
                    f'"parameters": {{...}}}}}}'
                )
        return value

    @model_validator(mode="after")
    def _plain_json(self) -> Self:
        """What is enqueued must survive JSON to the worker and on to the server unchanged: no bytes,
        no NaN or infinity (they would turn into null), no text that is not valid Unicode, no nesting
        deeper than MAX_JSON_DEPTH."""
        try:
            data = self.model_dump(mode="python")
        except ValueError as error:  # pydantic's own recursion limit
            raise ValueError(f"request: {error}") from None
        for name, value in data.items():
            check_plain_json(value, name, 0)
        return self


#: Deeper than any real schema, tool definition or metadata; deep enough nesting breaks JSON codecs.
MAX_JSON_DEPTH = 64


def check_plain_json(value: Any, where: str, depth: int) -> None:
    """Raise ValueError naming `where` (a dotted path) unless `value` is plain, lossless JSON."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{where}: nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where}: text that is not valid Unicode (a lone surrogate)") from None
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: {value} is not a JSON number")
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: key {key!r} is not a string")
            check_plain_json(key, where, depth + 1)
            check_plain_json(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            check_plain_json(item, f"{where}.{index}", depth + 1)
    elif value is not None and not isinstance(value, (bool, int)):
        raise ValueError(f"{where}: {type(value).__name__} is not JSON data")


# --- Events -------------------------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    seq: int = Field(ge=0)


class StartedEvent(_Event):
    """An attempt began: `attempt` counts from 1, `worker` names the process running it. `continues`:
    it carries on from the output published before it (an attempt that died mid-stream), which stays
    valid; otherwise a `reset` came first if there was output to void."""

    type: Literal["started"] = "started"
    attempt: int
    worker: str
    continues: bool = False


class TokenEvent(_Event):
    type: Literal["token"] = "token"
    text: str


class ReasoningEvent(_Event):
    """A piece of the model's reasoning (SGLang's `reasoning_content`), kept apart from the answer."""

    type: Literal["reasoning"] = "reasoning"
    text: str


class ToolCallEvent(_Event):
    """A fragment of a tool call: the first of an `index` has `id` and `name`, later ones more `arguments`."""

    type: Literal["tool_call"] = "tool_call"
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class ResetEvent(_Event):
    """The output published so far is void: a new attempt starts over. Subscribers drop partial text."""

    type: Literal["reset"] = "reset"
    reason: str


class DoneEvent(_Event):
    type: Literal["done"] = "done"
    finish_reason: str | None
    usage: dict[str, Any] | None
    text: str


class ErrorEvent(_Event):
    type: Literal["error"] = "error"
    kind: str
    message: str
    retryable: bool
    #: Seconds the LLM server asked to wait before trying again (its Retry-After), when it did.
    retry_after: float | None = None


class CancelledEvent(_Event):
    type: Literal["cancelled"] = "cancelled"


Event = Annotated[
    StartedEvent
    | TokenEvent
    | ReasoningEvent
    | ToolCallEvent
    | ResetEvent
    | DoneEvent
    | ErrorEvent
    | CancelledEvent,
    Field(discriminator="type"),
]
TERMINAL_EVENT_TYPES = frozenset({"done", "error", "cancelled"})
_event_adapter: TypeAdapter[Event] = TypeAdapter(Event)


def parse_event(raw: bytes | str) -> Event:
    return _event_adapter.validate_json(raw)


def encode_event(event: _Event) -> bytes:
    return event.__pydantic_serializer__.to_json(event)


def event_template(event: _Event) -> tuple[bytes, bytes]:
    """The event's JSON split around its `seq`, for a Redis script that numbers it where it is stored."""
    data = encode_event(event.model_copy(update={"seq": 0}))
    prefix = b'{"job_id":' + json.dumps(event.job_id, ensure_ascii=False).encode() + b',"seq":'
    if not data.startswith(prefix + b"0,"):
        raise ValueError(f"unexpected event encoding: {data[:80]!r}")
    return prefix, data[len(prefix) + 1 :]


class TextEventEncoder:
    """Encodes one job's `token` and `reasoning` events without building a model for each.

    These are nearly all of a job's events, and a worker publishes a whole GPU's output: the JSON is
    assembled from parts fixed per job, and reads back (`parse_event`) as the model would have written
    it. A lone surrogate in the text (possible after JSON decoding) is written as "?".
    """

    __slots__ = ("_prefix",)

    #: What follows `seq` up to the text, per kind: the models' own encoding, split around `seq` and
    #: before the (empty) text, taken once (it does not depend on the job).
    _middles: ClassVar[dict[str, bytes]] = {}

    def __init__(self, job_id: str):
        if not TextEventEncoder._middles:
            for model in (TokenEvent, ReasoningEvent):
                _, suffix = event_template(model(job_id="j", seq=0, text=""))
                TextEventEncoder._middles[model.model_fields["type"].default] = suffix.removesuffix(b'""}')
        # As `event_template` reads it from a model's encoding (checked there): the job ID as JSON.
        self._prefix = b'{"job_id":' + _dumps_text(job_id).encode("utf-8", "replace") + b',"seq":'

    def __call__(self, seq: int, kind: Literal["token", "reasoning"], text: str) -> bytes:
        body = _dumps_text(text).encode("utf-8", "replace")
        return b"%s%d%s%s}" % (self._prefix, seq, self._middles[kind], body)


_dumps_text = json.JSONEncoder(ensure_ascii=False).encode


# --- Results ------------------------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    kind: str
    message: str
    #: Whether the same request may succeed later (a caller's retry); with `retry_after`, when.
    retryable: bool = False
    retry_after: float | None = None


class Timings(BaseModel):
    """Wall-clock instants (Unix seconds) and the durations a user asks about."""

    enqueued_at: float
    started_at: float
    first_token_at: float | None = None
    finished_at: float

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use; mypy rejects decorated properties
    @property
    def queued_s(self) -> float:
        return self.started_at - self.enqueued_at

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use; mypy rejects decorated properties
    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_at is None else self.first_token_at - self.started_at

    @computed_field  # type: ignore[prop-decorator]  # pydantic's documented use; mypy rejects decorated properties
    @property
    def total_s(self) -> float:
        return self.finished_at - self.enqueued_at


#: How a job ended.
JobStatus = Literal["done", "error", "cancelled"]


class JobResult(BaseModel):
    job_id: str
    status: JobStatus
    text: str = ""
    #: The parsed JSON when the job asked for a json_schema and the text parses.
    parsed: Any = None
    reasoning: str = ""
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: ErrorInfo | None = None
    attempts: int = 1
    timings: Timings

    @property
    def ok(self) -> bool:
        return self.status == "done"


def describe_validation_error(error: ValidationError) -> str:
    """pydantic's errors as `field.path: what is wrong`, one per line, for a person to act on."""
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "request"
        lines.append(f"{where}: {item['msg']}")
    return "; ".join(lines)
