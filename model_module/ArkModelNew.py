"""The ARKOS import path: `from model_module.ArkModelNew import ArkModelLink, UserMessage, ...`.

Code written against the ARKOS model module keeps working; the implementation lives in the small
modules of this package.
"""

from arkq.errors import ModelError
from arkq.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage
from model_module.link import ArkModelLink

__all__ = [
    "AIMessage",
    "ArkModelLink",
    "Message",
    "ModelError",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
]
