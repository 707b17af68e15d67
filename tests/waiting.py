"""Waiting on a condition with a deadline, instead of sleeping a fixed time and hoping it came true.

`wait_until` (blocking, from `bench.processes`) and `until` (its async twin, whose check may be a
coroutine function) poll `check` every few milliseconds and raise TimeoutError, naming `what`, when it
is still false at the deadline. A passing test waits only as long as the condition takes; a slow
machine gets the whole deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from bench.processes import wait_until

__all__ = ["until", "wait_until"]


async def until(
    check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str, interval: float = 0.01
) -> None:
    """Return as soon as `check()` (awaited if it is a coroutine) is true; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(interval)  # the poll interval, not a wait for anything
