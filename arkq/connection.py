"""How every arkq process reaches Redis, from the `redis.*` settings: one set of rules for all.

Producers get a plain `redis.asyncio.Redis` from `connect`; workers get an arq client built from the
same keyword arguments (`worker.settings.redis_pool`). Either way: the password in the URL wins over
`redis.password` (which exists so the secret can live in the environment), connecting gives up after
`redis.connect_timeout_s`, and a command that meets a lost connection is retried with arkq's backoff
for about `retry_s` seconds, so a Redis restart is a pause, not a crash.

A Redis can also stop answering without closing anything: its host fails, the network partitions, a
NAT or firewall forgets the connection. Nothing then tells the client, and a read waits forever. So
every connection is judged dead after `redis.dead_after_s` of silence, three ways:

- every read of a command's reply times out after `dead_after_s` (`socket_timeout`; arkq and arq use
  no blocking command, so no legitimate reply takes that long), and the retry then reconnects;
- a subscribed connection, which only listens, is pinged when quiet (`Heartbeat`): a quiet channel is
  normal, a connection that does not even answer PING is not;
- TCP keepalive (and, on Linux, TCP_USER_TIMEOUT) lets the kernel drop an idle connection, or one whose
  sent bytes go unacknowledged, in about that time, so a dead pooled connection fails at once.

Every client's pool is a `ReadyCheckedPool`: redis-py checks each connection it lends out for unread
bytes by trying to read with a zero timeout, and that try (a timer, a future, a timeout raised and
caught) was a tenth of a worker's CPU per one-token job. The pool first looks instead: a connection
whose stream holds no bytes and no end, and whose parser holds no reply, is lent out as it is;
anything else goes through redis-py's own check, which reconnects it.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.asyncio.retry import Retry
from redis.backoff import AbstractBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError

from arkq.backoff import RedisClientBackoff
from arkq.errors import ConfigError
from config_module.loader import redacted
from config_module.settings import ArkConfig, RedisConfig

_T = TypeVar("_T")

#: `redis.dead_after_s` for a client that did not come from `connect` (a lent one, fakeredis).
DEFAULT_DEAD_AFTER_S: float = RedisConfig.model_fields["dead_after_s"].default


def reply(value: Awaitable[_T] | _T) -> Awaitable[_T]:
    """A command's reply, typed as what the asyncio client returns: an awaitable. redis-py annotates
    each command as "awaitable or not", since one class body serves its sync and async clients."""
    return cast("Awaitable[_T]", value)


class RetryFor(Retry):
    """redis-py's `Retry`, bounded by time instead of a count of tries.

    A count is a poor bound once a try can itself take `dead_after_s` (a Redis that does not answer):
    the tries that ride out a 30 s restart in a second each would stall for many minutes. A call is
    tried again until `budget_s` seconds have passed since it began; the last error is raised then."""

    __slots__ = ("_budget_s",)

    def __init__(self, backoff: AbstractBackoff, budget_s: float):
        super().__init__(backoff, retries=-1)
        self._budget_s = budget_s

    @property
    def budget_s(self) -> float:
        return self._budget_s

    async def call_with_retry(self, do: Callable[[], Awaitable[_T]], fail: Callable[[RedisError], Any]) -> _T:
        deadline = time.monotonic() + self._budget_s
        failures = 0
        while True:
            try:
                return await do()
            except self._supported_errors as error:
                failures += 1
                await fail(error)
                if time.monotonic() >= deadline:
                    raise error
                await asyncio.sleep(self._backoff.compute(failures))


def keepalive_options(dead_after_s: float) -> dict[int, int]:
    """TCP keepalive settings under which the kernel gives up on a silent peer in about `dead_after_s`.

    Three probes share the last half of it, after the connection was idle for the rest. The kernel
    counts whole seconds, so a very short `dead_after_s` rounds up (to 4 s at least). TCP_USER_TIMEOUT
    bounds how long sent bytes may go unacknowledged (a command or PING to a dead host). Only the
    options this platform has are set."""
    probes = 3
    interval = max(1, math.floor(dead_after_s / 2 / probes))
    idle = max(1, math.floor(dead_after_s - probes * interval))
    wanted = {
        "TCP_KEEPIDLE": idle,
        "TCP_KEEPINTVL": interval,
        "TCP_KEEPCNT": probes,
        "TCP_USER_TIMEOUT": max(1, math.ceil(dead_after_s * 1000)),  # milliseconds
    }
    return {getattr(socket, name): value for name, value in wanted.items() if hasattr(socket, name)}


@dataclass(frozen=True)
class RedisOptions:
    """What a Redis client needs beyond its URL."""

    url: str
    username: str | None
    password: str | None
    connect_timeout_s: float
    dead_after_s: float
    retry: Retry
    #: OSError: refused or reset while (re)connecting, which redis-py does not count as retryable.
    retry_on_error: tuple[type[Exception], ...] = (ConnectionError, TimeoutError, OSError)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Redis.from_url(self.url, ...)` (arq's `ArqRedis` takes the same)."""
        kwargs: dict[str, Any] = {
            "username": self.username,
            "password": self.password,
            "socket_connect_timeout": self.connect_timeout_s,
            "socket_timeout": self.dead_after_s,
            "retry": self.retry,
            "retry_on_error": list(self.retry_on_error),
        }
        if urlsplit(self.url).scheme != "unix":  # a Unix socket has no TCP options (redis-py refuses them)
            kwargs["socket_keepalive"] = True
            kwargs["socket_keepalive_options"] = keepalive_options(self.dead_after_s)
        return kwargs


def redis_options(config: ArkConfig, url: str | None = None, *, retry_s: float | None = None) -> RedisOptions:
    """The options for `url` (default `redis.url`), retrying for `retry_s` (default `redis.retry_s`)."""
    url = url or config.redis.url
    parts = urlsplit(url)
    # redis://:p%40ss@host: the password is "p@ss".
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is None and config.redis.password is not None:
        password = config.redis.password.get_secret_value()
    return RedisOptions(
        url=url,
        username=username,
        password=password,
        connect_timeout_s=config.redis.connect_timeout_s,
        dead_after_s=config.redis.dead_after_s,
        retry=RetryFor(RedisClientBackoff(), config.redis.retry_s if retry_s is None else retry_s),
    )


class ReadyCheckedPool(ConnectionPool):
    """redis-py's pool, with a cheaper check of the connection it lends out (see the module's doc)."""

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        if not is_idle_and_clean(connection):
            await super().ensure_connection(connection)


class BlockingReadyCheckedPool(ReadyCheckedPool, BlockingConnectionPool):
    """redis-py's blocking pool (a caller waits for a free connection), with the same check."""


def is_idle_and_clean(connection: AbstractConnection) -> bool:
    """Whether `connection` is open with nothing unread: no bytes or end of stream waiting in its
    stream reader, and no reply left in its parser (hiredis's reader). What redis-py's own check would
    find by reading, seen without a read: the event loop moves arriving bytes into the stream reader as
    they come. Anything else, a parser of another kind included, is "not known clean"."""
    stream = getattr(connection, "_reader", None)
    parser = hiredis_reader(connection)
    if type(stream) is not asyncio.StreamReader or parser is None:
        return False
    return (
        connection.is_connected
        and connection._socket_is_empty()  # type: ignore[no-untyped-call]  # redis-py's own look at them
        and not stream.at_eof()
        and stream.exception() is None
        and not parser.has_data()
    )


def hiredis_reader(connection: AbstractConnection | None) -> Any | None:
    """The connection's hiredis reader (`hiredis.Reader`: the replies read off the socket and not yet
    taken), or None when its parser is another kind."""
    reader = getattr(getattr(connection, "_parser", None), "_reader", None)
    return reader if hasattr(reader, "gets") and hasattr(reader, "has_data") else None


def connect(config: ArkConfig, url: str | None = None, *, retry_s: float | None = None) -> Redis:
    """A client for `url` (default `redis.url`); it connects on its first command."""
    options = redis_options(config, url, retry_s=retry_s)
    try:
        pool = ReadyCheckedPool.from_url(options.url, **options.client_kwargs())
    except ValueError as error:
        raise ConfigError(f"redis.url {redacted(options.url)!r}: {error}") from None
    return Redis.from_pool(pool)


def dead_after_s_of(redis: Redis) -> float:
    """The `redis.dead_after_s` a client was made with (its read timeout, from `connect`), or the
    default for a client made elsewhere, so its pub/sub connections are judged by the same rule."""
    timeout = redis.connection_pool.connection_kwargs.get("socket_timeout")
    return float(timeout) if timeout else DEFAULT_DEAD_AFTER_S


class Heartbeat:
    """Tells a quiet pub/sub connection from a dead one.

    A subscribed connection only listens, so a Redis that stopped answering without closing it looks
    just like a channel that nobody publishes on, and a read timeout cannot tell them apart. So after a
    third of `dead_after_s` spent listening without hearing anything, the heartbeat sends PING (Redis
    answers it on the subscribed connection too); after `dead_after_s` spent listening without hearing
    anything, the answer included, `get_message` raises redis-py's TimeoutError, as a command's read
    timeout does, and the caller connects again. Only time spent inside `get_message` counts: a caller
    busy elsewhere has not been listening, and whatever arrived meanwhile is read first.
    """

    PING_PAYLOAD = b"arkq-heartbeat"

    def __init__(self, pubsub: PubSub, dead_after_s: float):
        self.pubsub = pubsub
        self._dead_after_s = dead_after_s
        self._ping_after_s = dead_after_s / 3
        #: Seconds spent listening since something last arrived.
        self._listened = 0.0
        self._pinged = False

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        """The next published message, or None when none came within `timeout` seconds. Subscription
        confirmations and PING answers only prove the connection alive; they are not returned."""
        remaining = timeout
        while True:
            if self._listened >= self._dead_after_s:
                raise TimeoutError(
                    f"Redis sent nothing on a subscribed connection for {self._listened:.1f} s, not even an "
                    f"answer to PING (redis.dead_after_s={self._dead_after_s:g})"
                )
            if not self._pinged and self._listened >= self._ping_after_s:
                self._pinged = True
                await self.pubsub.ping(self.PING_PAYLOAD)
            if remaining <= 0:
                return None
            until_next_step = (self._dead_after_s if self._pinged else self._ping_after_s) - self._listened
            began = time.monotonic()
            message: dict[str, Any] | None = await self.pubsub.get_message(
                timeout=min(remaining, until_next_step)
            )
            spent = time.monotonic() - began
            remaining -= spent
            if message is None:
                self._listened += spent
                continue
            self._listened, self._pinged = 0.0, False
            if message["type"] in PubSub.PUBLISH_MESSAGE_TYPES:
                return message

    async def arrived(self) -> list[tuple[Any, Any]]:
        """The published messages (channel, data) already read off the socket, taken without waiting.

        A burst (a decode step of many streams) reaches the client in one read; `get_message` would
        return its messages one by one, each through redis-py's health check, retry wrapper, read
        timeout and message dict, which costs more than the message. These are taken from the parser
        at once. Replies of any other kind (subscription confirmations, PING answers) go through
        redis-py's own handling, so its subscription state stays right. Empty when the connection's
        parser is not hiredis's: every message then comes through `get_message`."""
        parser = hiredis_reader(self.pubsub.connection)
        if parser is None:
            return []
        take = parser.gets
        messages: list[tuple[Any, Any]] = []
        while True:
            response = take()
            if isinstance(response, Exception):  # an error reply, or the parser's own
                raise response
            if not isinstance(response, list):  # no complete reply left (on a subscribed connection
                return messages  # every reply is an array)
            kind = response[0]  # the hub subscribes to channels, never patterns: no `pmessage`
            if kind == b"message" or kind == "message":
                messages.append((response[1], response[2]))
            else:
                await self.pubsub.handle_message(response)  # type: ignore[no-untyped-call]  # unannotated


def redis_address(redis: Redis) -> str:
    """The URL `redis` connects to, from its own connection settings: the password never shows."""
    kwargs = redis.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if redis.connection_pool.connection_class is UnixDomainSocketConnection:
        return f"unix://{kwargs.get('path', '')}?db={db}"
    scheme = "rediss" if issubclass(redis.connection_pool.connection_class, SSLConnection) else "redis"
    user = kwargs.get("username") or ""
    secret = ":***" if kwargs.get("password") else ""
    at = "@" if user or secret else ""
    return f"{scheme}://{user}{secret}{at}{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{db}"


def unreachable_reason(error: BaseException) -> str:
    """Why a connection to Redis could not be made, in a few words."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused (is redis-server running there?)"
        if isinstance(seen, socket.gaierror):
            return f"unknown host ({seen.strerror or seen})"
        if isinstance(seen, TimeoutError):
            return "no answer in time (redis.connect_timeout_s)"
        seen = seen.__cause__ or seen.__context__
    return str(error) or type(error).__name__
