"""Requests in flight, addressable by ``rid`` for ``POST /abort_request``.

Each request paces itself with :meth:`ActiveRequest.sleep`, which an abort cuts short, so
an abort takes effect immediately even with long ``ttft_ms``/``itl_ms`` delays.
"""

from __future__ import annotations

import asyncio

__all__ = ["ActiveRequest", "Registry"]


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class ActiveRequest:
    __slots__ = ("_loop", "_waiter", "aborted", "rid")

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.aborted = False
        self._waiter: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (or just yield once if 0), returning early on abort."""
        if self.aborted:
            return
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter = self._loop.create_future()
        handle = self._loop.call_later(seconds, _wake, waiter)
        self._waiter = waiter
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    def abort(self) -> None:
        self.aborted = True
        if self._waiter is not None:
            _wake(self._waiter)


class Registry:
    """Active requests by rid. A reused rid shadows the older request until it ends."""

    def __init__(self) -> None:
        self._active: dict[str, ActiveRequest] = {}

    def open(self, rid: str) -> ActiveRequest:
        request = ActiveRequest(rid)
        self._active[rid] = request
        return request

    def close(self, request: ActiveRequest) -> None:
        if self._active.get(request.rid) is request:
            del self._active[request.rid]

    def abort(self, rid: str) -> bool:
        request = self._active.get(rid)
        if request is None:
            return False
        request.abort()
        return True

    def abort_all(self) -> int:
        requests = list(self._active.values())
        for request in requests:
            request.abort()
        return len(requests)

    def __len__(self) -> int:
        return len(self._active)
