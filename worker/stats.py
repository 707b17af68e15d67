"""What one worker process did lately, in plain numbers: the heartbeat's figures and the token counter.

Bumped on the hot path (an integer per token), so kept as bare attributes; the rates a heartbeat
reports are worked out when it is written, from samples over the last minute.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Iterator
from typing import ClassVar

#: The window of the heartbeat's rates.
WINDOW_S = 60.0


class WorkerStats:
    """Counters of one worker: jobs running and ended, output tokens, recent queue times."""

    #: Every live instance, for the Prometheus token counter (`worker.metrics`).
    _live: ClassVar[weakref.WeakSet[WorkerStats]] = weakref.WeakSet()

    def __init__(self) -> None:
        self.started_at = time.time()
        self.running = 0
        self.jobs_ended = 0
        #: Output tokens (text and reasoning) published since start.
        self.tokens = 0
        #: (when, tokens so far): samples for the token rate.
        self._token_samples: deque[tuple[float, int]] = deque([(time.monotonic(), 0)])
        #: (when, seconds from enqueue to start) of recently started jobs.
        self._queue_times: deque[tuple[float, float]] = deque()
        WorkerStats._live.add(self)

    @classmethod
    def live(cls) -> Iterator[WorkerStats]:
        return iter(list(cls._live))

    def job_started(self, queue_time_s: float) -> None:
        self._queue_times.append((time.monotonic(), queue_time_s))

    def tokens_per_s(self, now: float | None = None) -> float:
        """Output tokens per second over the last minute (or since start, when younger)."""
        now = time.monotonic() if now is None else now
        samples = self._token_samples
        samples.append((now, self.tokens))
        while len(samples) > 2 and now - samples[1][0] >= WINDOW_S:
            samples.popleft()
        then, tokens_then = samples[0]
        elapsed = now - then
        return (self.tokens - tokens_then) / elapsed if elapsed > 0 else 0.0

    def queue_times(self, now: float | None = None) -> tuple[float | None, int]:
        """The mean queue time of the jobs started in the last minute (None when none started), and
        their number."""
        now = time.monotonic() if now is None else now
        times = self._queue_times
        while times and now - times[0][0] > WINDOW_S:
            times.popleft()
        mean = sum(seconds for _, seconds in times) / len(times) if times else None
        return mean, len(times)
