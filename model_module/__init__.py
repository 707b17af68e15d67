"""arkq's link to the LLM server: `ArkModelLink`, its messages, stream events and errors."""

from model_module.errors import ErrorKind, ModelError
from model_module.events import Finish, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from model_module.link import ArkModelLink
from model_module.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage

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
