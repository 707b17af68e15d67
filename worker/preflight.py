"""What a worker says and checks as it starts.

It refuses to start against a Redis that waiting will not fix, and says why. An unreachable, busy or
out-of-memory Redis is a pause: arq's connect loop and arkq's poll rounds wait it out, logging what
Redis said (an unreachable one at once, in one line: `StartupRetry`). A wrong password, an ACL that
forbids arkq's commands or a read-only replica is a mistake in `redis.url`: a worker that started
anyway would poll for ever and run nothing.

Its first lines name its Redis, its LLM server and model, and what the LLM server answered to a
start-up check (`check_llm`). A server that does not answer is logged loudly, and the worker starts
anyway: the server may come up later (a GPU server loads its model for minutes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.backoff import AbstractBackoff
from redis.exceptions import RedisError

from arkq.connection import RetryFor, connect, unreachable_reason
from arkq.errors import ModelError, RedisNotAllowed, RedisReadOnly
from arkq.keys import WRITE_PROBE_KEY
from arkq.redis_failures import name_failure
from config_module.settings import ArkConfig
from model_module import ArkModelLink

_T = TypeVar("_T")

logger = logging.getLogger("arkq.worker")

#: What a worker does not start against.
FATAL = (RedisNotAllowed, RedisReadOnly)


async def refuse_unusable(redis: Redis, *, quiet: bool = False) -> None:
    """Raise the named failure if Redis refuses this worker for good; log a passing one (unless
    `quiet`: the worker's start-up checks again and logs it then).

    The probe is a DEL of a key that never exists: a write (so a replica answers READONLY) that writes
    nothing, and one Redis runs even when out of memory."""
    try:
        await redis.ping()
        await redis.delete(WRITE_PROBE_KEY)
    except RedisError as error:
        failure = name_failure(error)
        if isinstance(failure, FATAL):
            raise failure from error
        if not quiet:
            logger.warning("%s; the worker starts and waits for it", failure)


async def check_before_start(config: ArkConfig) -> None:
    """`refuse_unusable` on a connection of its own, before arq connects: arq's connect loop would
    retry a wrong password for `redis.retry_s` before giving up. A Redis that is only unreachable is
    left to the worker's own client to report (`StartupRetry`), in one line."""
    redis = connect(config, retry_s=0)
    try:
        await refuse_unusable(redis, quiet=True)
    finally:
        await redis.aclose()


def log_like_arq() -> None:
    """arkq's worker lines go where arq's go, formatted alike, when nothing else was set up for them:
    `arq worker.WorkerSettings` and `arkq worker` configure arq's logger only, and the start-up lines
    are INFO."""
    arqs = logging.getLogger("arq")
    if logging.getLogger().handlers or not arqs.handlers:
        return
    for name in ("arkq", "model_module"):  # the worker's lines, and the LLM link's
        ours = logging.getLogger(name)
        if ours.handlers:
            continue
        for handler in arqs.handlers:
            ours.addHandler(handler)
        ours.setLevel(arqs.level)
        ours.propagate = False


class _Announcer:
    """What every copy of a `StartupRetry` shares (redis-py copies the retry into each connection)."""

    def __init__(self) -> None:
        self.where = "redis.url"
        self.armed = True

    def __deepcopy__(self, memo: dict[int, Any]) -> _Announcer:
        return self


class StartupRetry(RetryFor):
    """The worker's Redis retry (`RetryFor`), which says at once, in one line, that Redis cannot be
    reached while the worker starts: which URL, and why. It goes on retrying as before; once Redis has
    answered, it says nothing more (the poll rounds report later outages)."""

    def __init__(self, backoff: AbstractBackoff, budget_s: float):
        super().__init__(backoff, budget_s)
        self.announcer = _Announcer()

    async def call_with_retry(self, do: Callable[[], Awaitable[_T]], fail: Callable[[RedisError], Any]) -> _T:
        announcer = self.announcer
        if not announcer.armed:
            return await super().call_with_retry(do, fail)

        async def failing(error: RedisError) -> Any:
            if announcer.armed:
                announcer.armed = False
                log_like_arq()
                logger.error(
                    "cannot reach Redis at %s: %s; the worker keeps trying, as long as it runs",
                    announcer.where,
                    unreachable_reason(error),
                )
            return await fail(error)

        result = await super().call_with_retry(do, failing)
        announcer.armed = False
        return result


async def check_llm(link: ArkModelLink) -> bool:
    """Ask the LLM server which models it serves, and log its answer: one line, loud (ERROR) when the
    server cannot be used as configured, with what to do. Never raises: the worker starts either way."""
    started = time.monotonic()
    limit_s = link.connect_timeout_s + 5
    try:
        async with asyncio.timeout(limit_s):
            served = await link.served_models()
    except (ModelError, TimeoutError) as error:
        problem = error if isinstance(error, ModelError) else f"no answer within {limit_s:.0f} s"
        logger.error(
            "LLM server check FAILED at %s (%s). Jobs fail until it answers: start it, or set "
            "llm.base_url (ARK_LLM__BASE_URL); `arkq check-llm` tells more. The worker starts anyway",
            link.base_url,
            problem,
        )
        return False
    took_ms = (time.monotonic() - started) * 1000
    if link.model_name not in served:
        logger.error(
            "LLM server check: %s serves %s, not llm.model_name=%r: jobs will fail. Set "
            "llm.model_name (ARK_LLM__MODEL_NAME) to one of them",
            link.base_url,
            served,
            link.model_name,
        )
        return False
    logger.info("LLM server check: %s answered in %.0f ms, serving %s", link.base_url, took_ms, served)
    return True
