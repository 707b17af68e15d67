"""Live counters exposed at ``GET /stats`` and on ``running_fake_llm().stats``.

Tests and benchmarks assert on server-side facts the client cannot see for itself (was
the abort received, did the server notice the disconnect), so the emulator counts them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Request outcomes since start-up.

    ``requests``: chat completions received. ``active``: in flight now. ``completed``:
    finished normally (stop / length / tool_calls). ``aborted``: ended by
    ``/abort_request``. ``disconnected``: the client went away before the end.
    ``errors``: answered with an HTTP error or an in-stream error event. ``faults``:
    injected by a directive (status, stream_error, cut_after, context_overflow).
    ``completion_tokens``: output tokens sent, over all requests. ``not_found``: requests
    for a path the server does not have (a client whose base URL lacks ``/v1``, say).
    """

    requests: int = 0
    active: int = 0
    completed: int = 0
    aborted: int = 0
    disconnected: int = 0
    errors: int = 0
    faults: int = 0
    completion_tokens: int = 0
    not_found: int = 0

    def snapshot(self) -> dict[str, int]:
        return asdict(self)
