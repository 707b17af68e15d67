"""A worker refuses to start against a Redis that waiting will not fix, and says why.

An unreachable, busy or out-of-memory Redis is a pause: arq's connect loop and arkq's poll rounds wait
it out, logging what Redis said. A wrong password, an ACL that forbids arkq's commands or a read-only
replica is a mistake in `redis.url`: a worker that started anyway would poll for ever and run nothing.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq.connection import connect
from arkq.errors import RedisNotAllowed, RedisReadOnly
from arkq.keys import WRITE_PROBE_KEY
from arkq.redis_failures import name_failure
from config_module.settings import ArkConfig

logger = logging.getLogger("arkq.worker")

#: What a worker does not start against.
FATAL = (RedisNotAllowed, RedisReadOnly)


async def refuse_unusable(redis: Redis) -> None:
    """Raise the named failure if Redis refuses this worker for good; log a passing one.

    The probe is a DEL of a key that never exists: a write (so a replica answers READONLY) that writes
    nothing, and one Redis runs even when out of memory."""
    try:
        await redis.ping()
        await redis.delete(WRITE_PROBE_KEY)
    except RedisError as error:
        failure = name_failure(error)
        if isinstance(failure, FATAL):
            raise failure from error
        logger.warning("%s; the worker starts and waits for it", failure)


async def check_before_start(config: ArkConfig) -> None:
    """`refuse_unusable` on a connection of its own, before arq connects: arq's connect loop would
    retry a wrong password for `redis.retry_s` before giving up."""
    redis = connect(config, retry_s=0)
    try:
        await refuse_unusable(redis)
    finally:
        await redis.aclose()
