"""Chat messages, as ARKOS agents build them, and their OpenAI wire format.

The classes keep the ARKOS model module's names and fields. Unlike the original `_format_messages`,
tool calls and tool results reach the server: an agent that runs tools needs the model to see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, field_validator

Role = Literal["user", "assistant", "system", "tool"]


class Message(BaseModel):
    """Any chat message. `Message(content=..., role=...)` works for every role arkq knows."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: Strict: bytes or numbers are a caller's mistake; only text is sent to the model.
    content: StrictStr | None
    role: Role

    def to_openai(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content if self.content is not None else ""}


class UserMessage(Message):
    content: StrictStr
    role: Literal["user"] = "user"


class SystemMessage(Message):
    content: StrictStr
    role: Literal["system"] = "system"


class AIMessage(Message):
    """An assistant turn; `content` is None when the model only called tools."""

    content: StrictStr | None = None
    role: Literal["assistant"] = "assistant"
    tool_calls: list[dict[str, Any]] | None = None

    @field_validator("tool_calls", mode="before")
    @classmethod
    def _one_call_is_a_list_of_one(cls, value: Any) -> Any:
        # The ARKOS docs type tool_calls as a dict; the OpenAI format wants a list of calls.
        return [value] if isinstance(value, Mapping) else value

    def to_openai(self) -> dict[str, Any]:
        formatted: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            formatted["tool_calls"] = self.tool_calls
        elif self.content is None:
            formatted["content"] = ""
        return formatted


class ToolMessage(Message):
    """A tool's result, answering the assistant's call `tool_call_id`."""

    content: StrictStr
    role: Literal["tool"] = "tool"
    tool_call_id: str | None = None
    #: Kept for compatibility with the ARKOS docs; not sent to the server.
    tool_calls: dict[str, Any] | None = None

    def to_openai(self) -> dict[str, Any]:
        formatted: dict[str, Any] = {"role": "tool", "content": self.content}
        if self.tool_call_id is not None:
            formatted["tool_call_id"] = self.tool_call_id
        return formatted


AnyMessage = Annotated[UserMessage | SystemMessage | AIMessage | ToolMessage, Field(discriminator="role")]
_any_message: TypeAdapter[Message] = TypeAdapter(AnyMessage)


def to_role_class(message: Message | Mapping[str, Any]) -> Message:
    """The role's own class for a message given as a base `Message`, a subclass or a plain dict."""
    if isinstance(message, (UserMessage, SystemMessage, AIMessage, ToolMessage)):
        return message
    if isinstance(message, Message):
        message = message.model_dump(exclude_unset=True)
    return _any_message.validate_python(message)


def format_messages(messages: Iterable[Message | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The OpenAI chat format of `messages`, tool calls and tool results included."""
    return [to_role_class(message).to_openai() for message in messages]
