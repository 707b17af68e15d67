"""One way to reach Redis for producers and workers alike, from the `redis.*` settings."""

from __future__ import annotations

import math
from urllib.parse import unquote

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, TimeoutError

from arkq.contract import deserialize, serialize
from config_module.settings import ArkConfig

#: The longest pause between two tries to reach Redis again.
BACKOFF_CAP_S = 1.0


def redis_settings(
    config: ArkConfig, url: str | None = None, *, retry_s: float | None = None
) -> RedisSettings:
    """arq's connection settings; `url` replaces `redis.url`. A password in the URL wins over
    `redis.password`, which exists so the secret can live in the environment instead.

    Commands that meet a lost connection are retried with backoff for about `retry_s` seconds
    (default `redis.retry_s`), so a Redis restart is a pause, not a crash."""
    settings = RedisSettings.from_dsn(url or config.redis.url)
    if settings.password is not None:
        settings.password = unquote(settings.password)  # redis://:p%40ss@host: the password is "p@ss"
    if settings.username is not None:
        settings.username = unquote(settings.username)
    if settings.password is None and config.redis.password is not None:
        settings.password = config.redis.password.get_secret_value()
    budget = config.redis.retry_s if retry_s is None else retry_s
    settings.conn_timeout = config.redis.connect_timeout_s  # type: ignore[assignment]
    settings.conn_retries = math.ceil(budget / BACKOFF_CAP_S)
    settings.conn_retry_delay = BACKOFF_CAP_S  # type: ignore[assignment]
    # OSError: refused or reset while (re)connecting, which redis-py does not count as retryable.
    settings.retry_on_error = [ConnectionError, TimeoutError, OSError]
    settings.retry = Retry(
        ExponentialBackoff(cap=BACKOFF_CAP_S, base=0.05), retries=math.ceil(budget / BACKOFF_CAP_S) + 4
    )
    return settings


async def connect(config: ArkConfig, url: str | None = None, *, retry_s: float | None = None) -> ArqRedis:
    """A pool that speaks arkq's JSON job format on `queue.name`."""
    return await create_pool(
        redis_settings(config, url, retry_s=retry_s),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=config.queue.name,
    )
