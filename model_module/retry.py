"""When the link tries a failed LLM call again, and how long it waits first.

The link is the only retry layer (its openai client has `max_retries=0`): two layers would multiply the
attempts and hide the real count. It waits by arkq's one backoff policy (`arkq.backoff`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from arkq.backoff import Backoff
from arkq.errors import ModelError

#: A server asking for a longer pause than this is not waited for inside a job: the error goes to the
#: caller, whose `retry_after` lets it defer the whole job instead of holding a worker slot.
MAX_RETRY_AFTER_S = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how patiently a link retries transient failures."""

    max_retries: int
    base_s: float
    max_s: float
    max_retry_after_s: float = MAX_RETRY_AFTER_S
    backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "backoff", Backoff(self.base_s, self.max_s))

    def delay_for(
        self, error: ModelError, attempt: int, *, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before trying again after `error` on try `attempt` (0-based), or None to stop."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        if error.retry_after is not None and error.retry_after > self.max_retry_after_s:
            return None
        return self.backoff.delay(attempt, error.retry_after, rand=rand)
