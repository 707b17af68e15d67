"""The ARKOS import path: `from model_module.ArkModelNew import ArkModelLink, UserMessage, ...`.

Code written against the ARKOS model module keeps working; the implementation lives in the small
modules of this package.
"""

from model_module.errors import ModelError
from model_module.link import ArkModelLink
from model_module.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage

__all__ = [
    "AIMessage",
    "ArkModelLink",
    "Message",
    "ModelError",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
]
