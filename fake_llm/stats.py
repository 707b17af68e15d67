"""Live counters exposed at ``GET /stats`` and on ``running_fake_llm().stats``.

Tests and benchmarks assert on server-side facts the client cannot see for itself (was
the abort received, did the server notice the disconnect, how many requests shared a decode step), so
the emulator counts them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["Stats"]


@dataclass(slots=True)
class Stats:
    """Request outcomes since start-up, and the state of the decode clock.

    ``requests``: chat completions received. ``active``: in flight now. ``completed``:
    finished normally (stop / length / tool_calls). ``aborted``: ended by
    ``/abort_request``. ``disconnected``: the client went away before the end.
    ``errors``: answered with an HTTP error or an in-stream error event. ``faults``:
    injected by a directive (status, stream_error, cut_after, context_overflow).
    ``completion_tokens``: output tokens sent, over all requests. ``not_found``: requests
    for a path the server does not have (a client whose base URL lacks ``/v1``, say).

    ``pacing``: ``"per-request"`` (each request on its own timer) or ``"batched"`` (one decode clock,
    :mod:`fake_llm.batching`). With batched pacing: ``batch``, the requests in the running batch now;
    ``steps``, decode steps taken; ``prefills``, prefill batches run (all 0 with per-request pacing).
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
    pacing: str = "per-request"
    batch: int = 0
    steps: int = 0
    prefills: int = 0

    def snapshot(self) -> dict[str, int | str]:
        return asdict(self)
