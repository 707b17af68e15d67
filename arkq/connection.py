"""One way to reach Redis for producers and workers alike, from the `redis.*` settings."""

from __future__ import annotations

from urllib.parse import unquote

from arq.connections import ArqRedis, RedisSettings, create_pool

from arkq.contract import deserialize, serialize
from config_module.settings import ArkConfig


def redis_settings(config: ArkConfig, url: str | None = None) -> RedisSettings:
    """arq's connection settings; `url` replaces `redis.url`. A password in the URL wins over
    `redis.password`, which exists so the secret can live in the environment instead."""
    settings = RedisSettings.from_dsn(url or config.redis.url)
    if settings.password is not None:
        settings.password = unquote(settings.password)  # redis://:p%40ss@host: the password is "p@ss"
    if settings.username is not None:
        settings.username = unquote(settings.username)
    if settings.password is None and config.redis.password is not None:
        settings.password = config.redis.password.get_secret_value()
    settings.conn_timeout = config.redis.connect_timeout_s  # type: ignore[assignment]
    settings.conn_retries = 1
    return settings


async def connect(config: ArkConfig, url: str | None = None) -> ArqRedis:
    """A pool that speaks arkq's JSON job format on `queue.name`."""
    return await create_pool(
        redis_settings(config, url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=config.queue.name,
    )
