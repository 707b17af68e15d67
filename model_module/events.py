"""What `ArkModelLink.stream` yields, defined in the core (`arkq.stream_events`) so that the queued link
(`producer.QueuedModelLink`) yields the very same classes without importing the LLM client."""

from arkq.stream_events import Finish, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta

__all__ = ["Finish", "ReasoningDelta", "StreamEvent", "TextDelta", "ToolCallDelta"]
