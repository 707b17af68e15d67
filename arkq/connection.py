"""How every arkq process reaches Redis, from the `redis.*` settings: one set of rules for all.

Producers get a plain `redis.asyncio.Redis` from `connect`; workers hand the same options to arq
(`worker.settings.redis_settings`). Either way: the password in the URL wins over `redis.password`
(which exists so the secret can live in the environment), connecting gives up after
`redis.connect_timeout_s`, and a command that meets a lost connection is retried with arkq's backoff
for about `retry_s` seconds, so a Redis restart is a pause, not a crash.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.exceptions import ConnectionError, TimeoutError

from arkq.backoff import REDIS_BACKOFF, RedisClientBackoff
from arkq.errors import ConfigError
from config_module.settings import ArkConfig

_T = TypeVar("_T")


def reply(value: Awaitable[_T] | _T) -> Awaitable[_T]:
    """A command's reply, typed as what the asyncio client returns: an awaitable. redis-py annotates
    each command as "awaitable or not", since one class body serves its sync and async clients."""
    return cast("Awaitable[_T]", value)


@dataclass(frozen=True)
class RedisOptions:
    """What a Redis client needs beyond its URL."""

    url: str
    username: str | None
    password: str | None
    connect_timeout_s: float
    retry: Retry
    #: OSError: refused or reset while (re)connecting, which redis-py does not count as retryable.
    retry_on_error: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, OSError)


def redis_options(config: ArkConfig, url: str | None = None, *, retry_s: float | None = None) -> RedisOptions:
    """The options for `url` (default `redis.url`), retrying for `retry_s` (default `redis.retry_s`)."""
    url = url or config.redis.url
    parts = urlsplit(url)
    # redis://:p%40ss@host: the password is "p@ss".
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is None and config.redis.password is not None:
        password = config.redis.password.get_secret_value()
    budget = config.redis.retry_s if retry_s is None else retry_s
    retries = math.ceil(budget / REDIS_BACKOFF.max_s) + 4
    return RedisOptions(
        url=url,
        username=username,
        password=password,
        connect_timeout_s=config.redis.connect_timeout_s,
        retry=Retry(RedisClientBackoff(), retries=retries),
    )


def connect(config: ArkConfig, url: str | None = None, *, retry_s: float | None = None) -> Redis:
    """A client for `url` (default `redis.url`); it connects on its first command."""
    options = redis_options(config, url, retry_s=retry_s)
    try:
        client: Redis = Redis.from_url(
            options.url,
            username=options.username,
            password=options.password,
            socket_connect_timeout=options.connect_timeout_s,
            retry=options.retry,
            retry_on_error=list(options.retry_on_error),
        )
    except ValueError as error:
        raise ConfigError(f"redis.url {_without_password(options.url)!r}: {error}") from None
    return client


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()
