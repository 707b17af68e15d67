"""An ARKOS agent run twice, once on `ArkModelLink` and once on `QueuedModelLink`: the same conversation.

The `Agent` is the one the ARKOS docs show: it holds a link and asks the model through `call_llm`, around
`generate_response`. Here it also has one tool, which it offers through the link's typed `stream`, runs
when the model calls it, and answers with a `ToolMessage`. Nothing in it depends on which link it holds:
`QueuedModelLink` runs every call as a job on the queue, and the agent cannot tell.

Run it against a model server, Redis and a worker; without a GPU, the emulator stands in:

    arkq fake-llm &            # the SGLang emulator on :30000
    redis-server &             # or ARK_REDIS__URL=...
    arkq worker &
    python examples/agent.py   # prints both transcripts; exit status 0 when they are the same
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from model_module.ArkModelNew import (
    AIMessage,
    ArkModelLink,
    Message,
    QueuedModelLink,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from model_module.events import TextDelta, ToolCallDelta

Link = ArkModelLink | QueuedModelLink


def get_weather(city: str = "Paris") -> str:
    """The agent's one tool: a forecast, made up (the same for the same city, so runs compare)."""
    return json.dumps({"city": city, "forecast": "sunny", "celsius": 21 + len(city) % 7})


TOOLS: dict[str, Callable[..., str]] = {"get_weather": get_weather}
TOOL_SPECS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Today's weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


class Agent:
    """An agent as the ARKOS docs show it: a link to the model, and `call_llm` to use it."""

    def __init__(self, llm: Link, system_prompt: str = "You are a helpful assistant. Be brief."):
        self.llm = llm
        self.context: list[Message] = [SystemMessage(content=system_prompt)]

    async def call_llm(
        self, context: list[Message] | None = None, json_schema: dict[str, Any] | None = None
    ) -> AIMessage:
        """Agent's interface with chat model."""
        llm_response = await self.llm.generate_response(context or [], json_schema)
        return AIMessage(content=llm_response)

    async def call_llm_with_tools(self, context: list[Message]) -> AIMessage:
        """The model's turn when it may call a tool: the calls come in the link's typed stream, in
        fragments (the first of each with its id and name, the next with more of its arguments)."""
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        async for event in self.llm.stream(context, tools=TOOL_SPECS):
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ToolCallDelta):
                call = calls.setdefault(
                    event.index, {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
                )
                call["id"] = event.id or call["id"]
                call["function"]["name"] = event.name or call["function"]["name"]
                call["function"]["arguments"] += event.arguments
        return AIMessage(content="".join(text) or None, tool_calls=[calls[i] for i in sorted(calls)] or None)

    def run_tools(self, message: AIMessage) -> None:
        """Run each tool the model called, and put its result in the context for the model to read."""
        for call in message.tool_calls or []:
            function = call["function"]
            result = TOOLS[function["name"]](**json.loads(function["arguments"] or "{}"))
            self.context.append(ToolMessage(content=result, tool_call_id=call["id"]))

    async def step(self, user_text: str, *, may_use_tools: bool = False) -> str:
        """One turn of the conversation: the user speaks, the agent answers (after a tool, if called)."""
        self.context.append(UserMessage(content=user_text))
        if may_use_tools:
            reply = await self.call_llm_with_tools(self.context)
            self.context.append(reply)
            if not reply.tool_calls:
                return reply.content or ""
            self.run_tools(reply)
        answer = await self.call_llm(self.context)
        self.context.append(answer)
        return answer.content or ""

    def transcript(self) -> list[str]:
        """The conversation, one line per message. Tool call IDs are left out: the server draws them."""
        lines = []
        for message in self.context:
            for call in (message.tool_calls if isinstance(message, AIMessage) else None) or []:
                lines.append(f"assistant calls {call['function']['name']}({call['function']['arguments']})")
            if message.content is not None:
                lines.append(f"{message.role}: {message.content}")
        return lines


def conversation(name: str) -> list[tuple[str, bool]]:
    """Three turns, the second with the tool: (what the user says, whether the agent may use a tool)."""
    return [
        (f"Hello, I am {name}. What can you do?", False),
        ("What is the weather like in Paris today?", True),
        ("Thanks! What should I pack, then?", False),
    ]


async def converse(llm: Link, name: str = "Ada") -> list[str]:
    """A fresh agent on `llm` through the whole conversation; its transcript."""
    agent = Agent(llm)
    for text, may_use_tools in conversation(name):
        await agent.step(text, may_use_tools=may_use_tools)
    return agent.transcript()


async def main() -> bool:
    """The conversation on each link; True when the two transcripts are the same."""
    async with ArkModelLink() as direct, QueuedModelLink() as queued:
        through_direct = await converse(direct)
        through_queue = await converse(queued)
    for title, transcript in (("ArkModelLink", through_direct), ("QueuedModelLink", through_queue)):
        print(f"--- {title}")
        print("\n".join(transcript))
    same = through_direct == through_queue
    print("--- the same conversation" if same else "--- the transcripts differ")
    return same


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
