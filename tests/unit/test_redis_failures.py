"""Each way redis-py reports a failed call becomes the arkq error that names it."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    ConnectionError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
)

from arkq.errors import (
    ArkqError,
    RedisBusy,
    RedisFailure,
    RedisNotAllowed,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisRefused,
    RedisUnavailable,
)
from arkq.redis_failures import name_failure


@pytest.mark.parametrize(
    ("error", "named", "says"),
    [
        # redis-py strips the code from the classes it knows: the message puts it back.
        (
            OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
            RedisOutOfMemory,
            "OOM command",
        ),
        (ResponseError("OOM command not allowed ... script: abc"), RedisOutOfMemory, "maxmemory"),
        (ReadOnlyError("You can't write against a read only replica."), RedisReadOnly, "READONLY You"),
        (
            NoPermissionError("no permissions to run the 'evalsha' command"),
            RedisNotAllowed,
            "NOPERM",
        ),
        (
            AuthenticationError("invalid username-password pair"),
            RedisNotAllowed,
            "password",
        ),
        (AuthenticationError("Authentication required."), RedisNotAllowed, "redis.url"),
        (ResponseError("BUSY Redis is busy running a script."), RedisBusy, "SCRIPT KILL"),
        (BusyLoadingError("Redis is loading the dataset in memory"), RedisUnavailable, "loading"),
        (ConnectionError("Error 111 connecting to 127.0.0.1:1."), RedisUnavailable, "Error 111"),
        (TimeoutError("Timeout reading from socket"), RedisUnavailable, "did not answer"),
        (OSError(104, "Connection reset by peer"), RedisUnavailable, "reset"),
        (ResponseError("ERR unknown command 'FOO'"), RedisRefused, "ERR unknown command"),
    ],
)
def test_each_failure_is_named(error: Exception, named: type[RedisFailure], says: str) -> None:
    failure = name_failure(error)
    assert type(failure) is named
    assert isinstance(failure, ArkqError)
    assert says in str(failure)
    if isinstance(failure, RedisRefused):
        assert failure.reply in str(failure)


def test_an_enqueue_that_may_have_happened_says_how_to_retry() -> None:
    failure = name_failure(TimeoutError("no answer within 2 s"), job_id="j-1")
    assert isinstance(failure, RedisUnavailable) and failure.job_id == "j-1"
    assert "may still have been queued" in str(failure) and "job_id='j-1'" in str(failure)


def test_a_refusal_says_nothing_was_written_and_carries_the_job() -> None:
    failure = name_failure(OutOfMemoryError("command not allowed"), job_id="j-2")
    assert failure.job_id == "j-2"
    assert "nothing was written" in str(failure) and "may still" not in str(failure)


def test_an_error_is_named_once() -> None:
    named = RedisBusy("busy", reply="BUSY")
    assert name_failure(named) is named


def test_only_redis_failures_are_named() -> None:
    with pytest.raises(TypeError):
        name_failure(ValueError("not Redis"))
