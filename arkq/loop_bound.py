"""Closing what a link opened on an event loop when that loop ends, for links nobody closes.

A link (`ArkModelLink`'s HTTP client, `QueuedModelLink`'s Redis client) opens connections that belong
to the running loop. The ARKOS examples never close their link, and a client still open when its loop
goes away, or garbage-collected while open, warns ("Unclosed client session", "unclosed Connection").
So each link ties what it opened to the loop's life with a keeper: an async generator suspended at its
first `yield`. A loop tracks every async generator iterated on it: `asyncio.run` closes those still
suspended before it closes the loop, and one garbage-collected earlier (with the link that holds it) is
closed in a task on its loop. Either way the keeper runs `close` on the loop that owns the connections.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import suppress
from types import AsyncGeneratorType
from typing import cast

#: What a keeper runs when its loop ends first: close the connections (a no-op if closed already).
Close = Callable[[], Awaitable[None]]
Keeper = AsyncGeneratorType[None, None]


async def _keep(close: Close) -> AsyncGenerator[None, None]:
    try:
        yield  # resumed: released (see `release`); closed: close the resource
    except BaseException:
        await close()
        raise


def close_with_loop(close: Close) -> Keeper:
    """A keeper that runs `close` when the running loop ends (or the keeper is garbage-collected)
    before it is released. Call it inside the loop that owns the connections."""
    keeper = cast(Keeper, _keep(close))
    _step(keeper)
    return keeper


def release(keeper: Keeper | None) -> None:
    """End `keeper` without running its `close`: the link closes the resource itself (`aclose`), or
    leaves one opened for another loop open, as only that loop could close it and it may, in another
    thread, still be using it.

    A keeper already running is its loop's shutdown closing the resource; resuming it would raise.
    """
    if keeper is not None and not keeper.ag_running:
        _step(keeper)


def _step(keeper: AsyncGenerator[None, None]) -> None:
    # Neither the way to the keeper's `yield` nor the way on to its end awaits anything, so its step
    # needs no task and can run in synchronous code (a link's `client` property).
    with suppress(StopIteration, StopAsyncIteration):
        keeper.asend(None).send(None)
