"""The calls every link offers an ARKOS agent, on top of its own two: `stream` and `generate_response`.

`ArkModelLink` (straight to the server) and `QueuedModelLink` (through the queue) differ in how they
get an answer, not in the shapes an agent calls it in: the text-only stream, the low-level
`make_llm_call`, and `async with`. Those are written once, here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self

from arkq.messages import Message, format_messages
from arkq.stream_events import StreamEvent, TextDelta

#: A message as the links take it: an ARKOS message object, or the OpenAI wire format's dict.
MessageLike = Message | Mapping[str, Any]


class LinkCalls(ABC):
    """The ARKOS call shapes, over a link's `stream`, `generate_response` and `aclose`."""

    @abstractmethod
    def stream(
        self, messages: Sequence[MessageLike], json_schema: Mapping[str, Any] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        """The answer as typed events, ending with exactly one `Finish`."""

    @abstractmethod
    async def generate_response(
        self, messages: Sequence[MessageLike], json_schema: Mapping[str, Any] | None = None
    ) -> str:
        """The whole answer's text."""

    @abstractmethod
    async def aclose(self) -> None:
        """Give back the link's connections; the link stays usable."""

    def _format_messages(self, messages: Sequence[MessageLike]) -> list[dict[str, Any]]:
        """The OpenAI wire format of `messages` (ARKOS's name for it); tool calls and results kept."""
        return format_messages(messages)

    async def generate_stream(self, messages: Sequence[MessageLike]) -> AsyncGenerator[str, None]:
        """The answer's text as it is generated (reasoning and tool calls left out)."""
        async with aclosing(self._text_stream(messages, None)) as texts:
            async for text in texts:
                yield text

    async def make_llm_call(
        self,
        messages: Sequence[MessageLike],
        json_schema: Mapping[str, Any] | None,
        stream: bool = False,
    ) -> str | AsyncIterator[str]:
        """The ARKOS low-level call: the answer text, or with `stream=True` an iterator of its pieces."""
        if stream:
            return self._text_stream(messages, json_schema)
        return await self.generate_response(messages, json_schema)

    async def _text_stream(
        self, messages: Sequence[MessageLike], json_schema: Mapping[str, Any] | None
    ) -> AsyncGenerator[str, None]:
        # aclosing: a consumer that stops early ends the call now (its stream closed, its job
        # cancelled), not whenever the garbage collector runs.
        async with aclosing(self.stream(messages, json_schema)) as events:
            async for event in events:
                if type(event) is TextDelta:
                    yield event.text

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
