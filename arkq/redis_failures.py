"""Every way a Redis call can fail, named: what Redis said (or that it did not answer) and what to do.

redis-py raises its own classes, or a bare `ResponseError` whose text starts with Redis's error code
(an error raised inside a Lua script arrives that way). Callers of arkq get an `arkq.errors.RedisFailure`
whose class says which failure it was and whose message a person can act on. Producers raise these;
workers log them; the `arkq` command prints one line and exits with the failure's code.
"""

from __future__ import annotations

from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.errors import (
    RedisBusy,
    RedisFailure,
    RedisNotAllowed,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisRefused,
    RedisUnavailable,
)

_ACL_COMMANDS = "+@read +@write +@scripting +@pubsub +@connection +info, on its keys and channels"


def name_failure(error: BaseException, *, job_id: str | None = None) -> RedisFailure:
    """The arkq error for a failed Redis call (`error` as redis-py, asyncio or the OS raised it).

    `job_id` is the job an enqueue was sending: a failure that may have reached Redis says that the job
    may have been queued, and that enqueueing it again with that ID is safe."""
    if isinstance(error, RedisFailure):
        return error
    said = _as_redis_said_it(error)
    code = said.split(" ", 1)[0]
    if code == "OOM":
        return RedisOutOfMemory(
            f"Redis is out of memory and refused the write ({said}); nothing was written. "
            "Free memory, raise its maxmemory, or let it evict other data (maxmemory-policy)",
            reply=said,
            job_id=job_id,
        )
    if code == "READONLY":
        return RedisReadOnly(
            f"Redis is a read-only replica ({said}); nothing was written. "
            "Point redis.url at the primary (after a failover, the new one)",
            reply=said,
            job_id=job_id,
        )
    if code in {"NOPERM", "WRONGPASS", "NOAUTH"} or isinstance(error, AuthenticationError):
        return RedisNotAllowed(
            f"Redis refused us ({said}). Check the user and password in redis.url (or "
            f"ARK_REDIS__PASSWORD) and that the user's ACL allows what arkq needs ({_ACL_COMMANDS})",
            reply=said,
            job_id=job_id,
        )
    if code == "BUSY":
        return RedisBusy(
            f"Redis is busy running a script ({said}); nothing was written. It answers again when "
            "the script ends (SCRIPT KILL ends one that has not written)",
            reply=said,
            job_id=job_id,
        )
    if isinstance(error, BusyLoadingError):
        return RedisUnavailable(f"Redis is loading its data ({said}); try again in a moment", job_id=job_id)
    if isinstance(error, ResponseError):
        return RedisRefused(f"Redis refused the call: {said}", reply=said, job_id=job_id)
    if isinstance(error, RedisError | OSError):  # no connection, or no answer in time
        unanswered = isinstance(error, TimeoutError | RedisTimeoutError)
        message = f"Redis did not answer: {said}" if unanswered else f"cannot reach Redis: {said}"
        if job_id is not None:
            message += (
                f". Job {job_id} may still have been queued: enqueue it again with "
                f"job_id={job_id!r} (safe: the same ID runs once)"
            )
        return RedisUnavailable(message, job_id=job_id)
    raise TypeError(f"not a Redis failure: {error!r}")


def _as_redis_said_it(error: BaseException) -> str:
    """The error as Redis worded it: redis-py strips the code from the errors it has a class for."""
    said = str(error) or type(error).__name__
    for cls, code in _STRIPPED_CODES:
        if isinstance(error, cls) and not said.startswith(code):
            return f"{code} {said}"
    return said


#: redis-py's classes whose text has lost Redis's error code (its parser's EXCEPTION_CLASSES).
_STRIPPED_CODES: tuple[tuple[type[RedisError], str], ...] = (
    (OutOfMemoryError, "OOM"),
    (ReadOnlyError, "READONLY"),
    (NoPermissionError, "NOPERM"),
    (BusyLoadingError, "LOADING"),
)
