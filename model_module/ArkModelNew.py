"""The ARKOS import path: `from model_module.ArkModelNew import ArkModelLink, UserMessage, ...`.

Code written against the ARKOS model module keeps working; the implementation lives in the small
modules of this package. `QueuedModelLink` (from `producer`) is here too: the same API with every call
run as a job on the queue, so an agent moves onto the queue by changing the link it is handed.
"""

from arkq.errors import JobCancelled, ModelError
from arkq.messages import AIMessage, Message, SystemMessage, ToolMessage, UserMessage
from model_module.link import ArkModelLink
from producer.link import QueuedModelLink

__all__ = [
    "AIMessage",
    "ArkModelLink",
    "JobCancelled",
    "Message",
    "ModelError",
    "QueuedModelLink",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
]
