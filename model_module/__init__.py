"""arkq's link to the LLM server: `ArkModelLink`, its messages, stream events and errors."""

from arkq.errors import ErrorKind, ModelError
from arkq.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage
from model_module.events import Finish, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from model_module.link import ArkModelLink

__all__ = [
    "AIMessage",
    "ArkModelLink",
    "ErrorKind",
    "Finish",
    "Message",
    "ModelError",
    "ReasoningDelta",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "ToolCallDelta",
    "ToolMessage",
    "UserMessage",
]
