"""When the link tries a failed LLM call again, how long it waits first, and how many tries a job gets.

The link is the only retry layer (its openai client has `max_retries=0`): two layers would multiply the
requests and hide the real count. It retries failures that happen before any output, and only those,
waiting by arkq's one backoff policy (`arkq.backoff`). A `RequestBudget` counts those failed requests
for a whole job: a worker that starts the job over after its stream broke mid-way hands the same
budget to the next attempt, so a server that keeps refusing gets at most `max_retries + 1` requests
for the job, whatever the number of attempts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from arkq.backoff import Backoff
from arkq.errors import ModelError

#: The longest pause a server's Retry-After gets: a server asking for more is retried after this long.
MAX_RETRY_AFTER_S = 60.0


@dataclass(slots=True)
class RequestBudget:
    """The requests of one job (or one call): how many were sent, how many failed before any output."""

    #: Requests that may fail before any output, in all: `max_retries + 1`.
    limit: int
    sent: int = 0
    failed: int = 0

    @property
    def spent(self) -> bool:
        return self.failed >= self.limit


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

    def budget(self) -> RequestBudget:
        """A fresh budget: one request, and `max_retries` more for failures before any output."""
        return RequestBudget(limit=self.max_retries + 1)

    def delay_for(
        self, error: ModelError, attempt: int, *, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before trying again after `error` on try `attempt` (0-based), or None to stop.

        A server's Retry-After is honoured up to `max_retry_after_s`: a longer one would hold the job's
        worker slot for it, and the try after the capped wait only costs one request of the budget."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        retry_after = error.retry_after
        if retry_after is not None:
            retry_after = min(retry_after, self.max_retry_after_s)
        return self.backoff.delay(attempt, retry_after, rand=rand)
