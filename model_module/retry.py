"""When to try a failed LLM call again, and how long to wait first.

The link is the only retry layer (its openai client has `max_retries=0`): two layers would multiply the
attempts and hide the real count. The delay is a pure function of the attempt number and a random
draw, so its bounds can be tested without sleeping.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from model_module.errors import ModelError

#: A server asking for a longer pause than this is not waited for inside a job: the error goes to the
#: caller, whose `retry_after` lets it defer the whole job instead of holding a worker slot.
MAX_RETRY_AFTER_S = 60.0


def backoff_delay(
    attempt: int,
    base_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    *,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number `attempt + 1` (attempt counts from 0).

    Exponential `base_s * 2**attempt` capped at `max_s`, with equal jitter: the wait is drawn from
    [ceiling/2, ceiling], so workers that failed together spread out, yet none retries at once. A larger
    server-sent `retry_after_s` wins: retrying earlier than the server asked only fails again.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    ceiling = min(max_s, base_s * 2.0 ** min(attempt, 64))
    delay = ceiling / 2.0 + rand() * ceiling / 2.0
    if retry_after_s is not None and retry_after_s > delay:
        delay = retry_after_s
    return delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times and how patiently a link retries transient failures."""

    max_retries: int
    base_s: float
    max_s: float
    max_retry_after_s: float = MAX_RETRY_AFTER_S

    def delay_for(
        self, error: ModelError, attempt: int, *, rand: Callable[[], float] = random.random
    ) -> float | None:
        """Seconds to wait before trying again after `error` on try `attempt` (0-based), or None to stop."""
        if not error.retryable or attempt >= self.max_retries:
            return None
        if error.retry_after is not None and error.retry_after > self.max_retry_after_s:
            return None
        return backoff_delay(attempt, self.base_s, self.max_s, error.retry_after, rand=rand)
