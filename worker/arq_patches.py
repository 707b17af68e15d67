"""The two places where arkq extends arq's worker loop itself (arq 0.28 has no hooks for them).

- Its wait between polls becomes wakeable (`worker.wakeup`), for millisecond pickup.
- A Redis error inside one poll round (a restart: arq's claim watches a key outside its own error
  handling, and a failed job task re-raises there) costs that round, not the worker process: the next
  round retries. Jobs are not lost meanwhile: they stay queued, and their leases lapse and move.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import arq.worker
from redis.exceptions import RedisError

from worker import wakeup

logger = logging.getLogger("arkq.worker")

#: The pause after a poll round that Redis failed, so a down Redis is not hammered.
FAILED_ROUND_PAUSE_S = 0.5

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    arq.worker.poll = wakeup.wakeable_poll  # type: ignore[attr-defined]
    poll_iteration = arq.worker.Worker._poll_iteration

    async def resilient_poll_iteration(self: Any) -> None:
        try:
            await poll_iteration(self)
        except RedisError as error:
            logger.warning("poll round failed on Redis (%s); trying again", error)
            await asyncio.sleep(FAILED_ROUND_PAUSE_S)

    arq.worker.Worker._poll_iteration = resilient_poll_iteration  # type: ignore[method-assign]
    _installed = True
