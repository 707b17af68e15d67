"""What a model's stream yields: small typed events instead of the SDK's chunk objects.

Both links yield them: `ArkModelLink.stream` from the server's chunks, `QueuedModelLink.stream` from a
job's events. They live in the core so that the producer side, which never loads the LLM client, gives
an agent the very same classes (an `isinstance` or `type(...) is` check works on either link's).

A worker forwards every event to Redis, so events are cheap frozen slot dataclasses built straight from
the decoded JSON (no pydantic validation per token), and each kind of output has its own type so a
consumer can route reasoning, text and tool calls without inspecting dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class TextDelta:
    """Answer text as it arrives; SGLang may put several tokens in one delta."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """Reasoning ("thinking") text, SGLang's `reasoning_content`, kept apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One fragment of a streamed tool call, as the server sent it.

    The first fragment of call `index` carries `id` and `name`; later ones carry only pieces of the JSON
    `arguments`, to be concatenated per `index`.
    """

    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The stream ended cleanly. Always the last event, exactly once.

    `reason` is the server's finish_reason (stop, length, tool_calls, abort) and `usage` its token
    counts (prompt_tokens, completion_tokens, ...), when it sent them.
    """

    reason: str | None
    usage: dict[str, Any] | None


StreamEvent = TextDelta | ReasoningDelta | ToolCallDelta | Finish
