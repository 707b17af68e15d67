"""The one backoff policy: how long every arkq retry loop waits before it tries again.

The LLM link between tries of a request, a worker between attempts of a job, event readers and the
wake-up listener riding out a Redis outage, a worker's poll round after Redis failed it, and redis-py's
own reconnects all wait `Backoff.delay`: exponential, capped, with equal jitter, so that clients that
failed together spread out and none retries at once. The delay is a pure function of the attempt and
a random draw, so its bounds are tested without sleeping.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.backoff import AbstractBackoff


@dataclass(frozen=True, slots=True)
class Backoff:
    """Wait `base_s * 2**attempt`, capped at `max_s`, drawn from the upper half of that."""

    base_s: float
    max_s: float

    def delay(
        self, attempt: int, retry_after_s: float | None = None, *, rand: Callable[[], float] = random.random
    ) -> float:
        """Seconds to wait before try number `attempt + 1` (attempt counts from 0).

        The wait is drawn from [ceiling/2, ceiling]. A larger server-sent `retry_after_s` wins: retrying
        earlier than the server asked only fails again."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(attempt, 64))
        delay = ceiling / 2.0 + rand() * ceiling / 2.0
        if retry_after_s is not None and retry_after_s > delay:
            delay = retry_after_s
        return delay


#: Reaching Redis again: quick first tries (a restart takes a fraction of a second), then once a second.
REDIS_BACKOFF = Backoff(base_s=0.05, max_s=1.0)


class RedisClientBackoff(AbstractBackoff):
    """The policy in the shape redis-py's `Retry` asks for (`compute(failures)`, failures from 1)."""

    def __init__(self, policy: Backoff = REDIS_BACKOFF):
        self._policy = policy

    def reset(self) -> None:
        pass

    def compute(self, failures: int) -> float:
        return self._policy.delay(max(0, failures - 1))


class Outage:
    """Rides out a dependency that stopped answering: `await outage.wait(error)` after each failure
    sleeps the next backoff delay, until `budget_s` seconds have passed since the first failure; then
    it raises `error`. `over()` after a success starts the count afresh."""

    def __init__(self, budget_s: float | None, policy: Backoff = REDIS_BACKOFF):
        self._budget_s = budget_s
        self._policy = policy
        self._since: float | None = None
        self._attempt = 0

    def over(self) -> None:
        self._since, self._attempt = None, 0

    async def wait(self, error: BaseException) -> None:
        now = time.monotonic()
        if self._since is None:
            self._since = now
        if self._budget_s is not None and now - self._since > self._budget_s:
            raise error
        await asyncio.sleep(self._policy.delay(self._attempt))
        self._attempt += 1
