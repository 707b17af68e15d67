"""Every exception arkq raises, on one page, under one root.

A caller who wants "anything arkq refused or could not do" catches `ArkqError`; one who can act on a
particular failure catches its class. Where a built-in meaning fits, a class is also that built-in
(`InvalidRequest` is a `ValueError`, `JobNotFound` a `LookupError`, `RedisUnavailable` a
`ConnectionError`), so code written against those keeps working.

    ArkqError
    ├── ConfigError            the configuration cannot be used; names the key (also ValueError)
    ├── InvalidRequest         a request refused before it reached Redis; names the field (also ValueError)
    │   └── JobIdInUse         the job ID names a job with another request: nothing was written
    ├── QueueFull              queue.max_depth jobs are queued or running; nothing was written
    │   └── TenantLimitReached one tenant's limit of active jobs; nothing was written
    ├── RedisFailure           a Redis call failed: `job_id` when it was an enqueue's (see `enqueue`)
    │   ├── RedisUnavailable   no answer in time, or no connection (also ConnectionError)
    │   └── RedisRefused       Redis answered with an error: `reply` is what it said
    │       ├── RedisOutOfMemory   OOM: maxmemory reached under noeviction
    │       ├── RedisReadOnly      READONLY: a replica, e.g. after a failover
    │       ├── RedisNotAllowed    WRONGPASS, NOAUTH, NOPERM: the user, password or ACL
    │       └── RedisBusy          BUSY: a script has run too long
    ├── ModelError             an LLM call failed: `kind`, `retryable`, `retry_after`
    ├── JobError               about one job: `job_id`
    │   ├── JobNotFound        Redis knows nothing of the job (also LookupError)
    │   ├── JobLost            neither queued nor running, yet it never ended (also LookupError)
    │   ├── StreamReset        the attempt being followed was voided: start over
    │   └── JobFailed          the job ended in `error`: `kind`, `retryable`, `retry_after`, `result`
    │       └── JobCancelled   the job ended `cancelled`
    ├── LeaseLost              (worker) another attempt holds the job's lease: this one must stop
    └── JobEnds                (worker) the job ends now, without another attempt, with this error

The tools' own errors are ArkqErrors too, and never reach a user as exceptions: the emulator's
(`fake_llm`) become SGLang's error bodies, `arkq check-llm`'s a one-line message.

This module imports nothing of arkq, so every layer, the settings included, can raise from the tree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from arkq.contract import JobResult


class ArkqError(Exception):
    """The root of everything arkq raises."""


class ConfigError(ArkqError, ValueError):
    """The configuration cannot be used; the message names the offending key."""


class InvalidRequest(ArkqError, ValueError):
    """The request was refused before anything reached Redis; the message names the field, and
    `field` is its top-level name (`messages`, `json_schema`, ...) when the fault is in one."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class JobIdInUse(InvalidRequest):
    """The job ID given to `enqueue` names a job (queued, running, or ended and still kept) whose request
    was another one; nothing was written. The same request again returns the existing job instead.
    `field` is `job_id`, and `job_id` the ID."""

    def __init__(self, job_id: str):
        super().__init__(
            f"job_id: {job_id!r} is the ID of a job with a different request: nothing was enqueued; "
            "choose another ID, or send the same request to get that job",
            field="job_id",
        )
        self.job_id = job_id


class QueueFull(ArkqError):
    """`queue.max_depth` jobs are queued or running already; nothing was written."""

    def __init__(self, message: str, *, depth: int | None = None):
        super().__init__(message)
        self.depth = depth


class TenantLimitReached(QueueFull):
    """The tenant has its limit of jobs queued or running (`gateway.max_active_jobs_per_key`); nothing
    was written. `depth` is how many it has."""

    def __init__(self, message: str, *, tenant: str, depth: int):
        super().__init__(message, depth=depth)
        self.tenant = tenant


class RedisFailure(ArkqError):
    """A Redis call failed. The message says what Redis said (or did not) and what to do.

    `job_id` is set when the call was `Producer.enqueue`'s: the ID was chosen before anything was
    sent, and a failure after sending (a timeout) may still have queued the job. Enqueueing again with
    that `job_id` is safe: the same ID runs once."""

    def __init__(self, message: str, *, job_id: str | None = None):
        super().__init__(message)
        self.job_id = job_id


class RedisUnavailable(RedisFailure, ConnectionError):
    """Redis did not answer within the caller's timeout, or the connection failed."""


class RedisRefused(RedisFailure):
    """Redis answered the call with an error; `reply` is its own words."""

    def __init__(self, message: str, *, reply: str, job_id: str | None = None):
        super().__init__(message, job_id=job_id)
        self.reply = reply


class RedisOutOfMemory(RedisRefused):
    """OOM: Redis reached `maxmemory` and evicts nothing (`noeviction`); it refuses every write."""


class RedisReadOnly(RedisRefused):
    """READONLY: the server is a replica (after a failover, say); writes go to the primary."""


class RedisNotAllowed(RedisRefused):
    """WRONGPASS, NOAUTH or NOPERM: the password, the user or its ACL does not allow the call."""


class RedisBusy(RedisRefused):
    """BUSY: a script has run past Redis's busy threshold; Redis answers nothing else until it ends."""


# --- The LLM ------------------------------------------------------------------------------------------

ErrorKind = Literal[
    "timeout",
    "connect",
    "rate_limit",
    "server_error",
    "bad_request",
    "context_overflow",
    "auth",
    "stream",
    "bad_response",
]
ERROR_KINDS: frozenset[str] = frozenset(get_args(ErrorKind))
#: Kinds where the same request may succeed on a later try: the fault is transient or on the server side.
RETRYABLE_KINDS: frozenset[str] = frozenset({"timeout", "connect", "rate_limit", "server_error", "stream"})


class ModelError(ArkqError):
    """An LLM call failed; `kind` says how, `retryable` whether trying again can help.

    A worker has to decide, per failure, whether to retry now, retry later (`retry_after`), give up on
    the job, or tell the user their prompt is too long. The openai SDK spreads that over a dozen
    exception classes, HTTP statuses and in-stream error objects; `kind` folds them into one small set
    (`model_module.errors` does the folding)."""

    kind: ErrorKind
    message: str
    retryable: bool
    #: Seconds the server asked us to wait (Retry-After), if it said.
    retry_after: float | None
    status_code: int | None

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        retryable: bool | None = None,
        retry_after: float | None = None,
        status_code: int | None = None,
    ) -> None:
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown ModelError kind {kind!r}; expected one of {sorted(ERROR_KINDS)}")
        super().__init__(kind, message)
        self.kind = kind
        self.message = message
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.retry_after = retry_after
        self.status_code = status_code

    def __str__(self) -> str:
        status = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.kind}{status}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"ModelError(kind={self.kind!r}, message={self.message!r}, retryable={self.retryable!r}, "
            f"retry_after={self.retry_after!r}, status_code={self.status_code!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays `args`; spell out every field so a pickled error comes back whole.
        return (type(self), (self.kind, self.message, self.retryable, self.retry_after, self.status_code))

    @classmethod
    def from_report(
        cls, kind: ErrorKind, report: str, retry_after: float | None = None, retryable: bool | None = None
    ) -> ModelError:
        """The error again from its report, `str(error)`, which is what a job's `error` event carries:
        the HTTP status and the message are read back from it; `retryable` by default follows from the
        kind. A report in another shape is kept whole as the message."""
        message, status_code = report, None
        if report.startswith(f"{kind}: "):
            message = report.removeprefix(f"{kind}: ")
        elif report.startswith(f"{kind} (HTTP "):
            status, sep, rest = report.removeprefix(f"{kind} (HTTP ").partition("): ")
            if sep and status.isdigit():
                message, status_code = rest, int(status)
        return cls(kind, message, retryable=retryable, retry_after=retry_after, status_code=status_code)


# --- Jobs, as their callers see them --------------------------------------------------------------------


class JobError(ArkqError):
    """Something about one job; `job_id` names it."""

    def __init__(self, job_id: str, message: str):
        super().__init__(message)
        self.job_id = job_id


class JobNotFound(JobError, LookupError):
    """Redis knows nothing of this job ID: never enqueued, or its events and result expired."""


class JobLost(JobError, LookupError):
    """The job is neither queued nor running, yet its events never reached an end: nothing more will
    come (arq dropped it without running it, or its events expired)."""


class StreamReset(JobError):
    """The attempt whose tokens were being yielded was voided (its worker died, or its stream failed)
    and the job started over. Drop the text received so far; `job.tokens()` again yields the new
    attempt's tokens only."""

    def __init__(self, job_id: str, reason: str):
        super().__init__(job_id, f"job {job_id} started over: {reason}")
        self.reason = reason


class JobFailed(JobError):
    """The job ended without a result text (`error` or `cancelled`); `result` holds why."""

    def __init__(self, result: JobResult):
        error = result.error
        detail = f"{error.kind}: {error.message}" if error else result.status
        super().__init__(result.job_id, f"job {result.job_id} {result.status}: {detail}")
        self.result = result

    @property
    def kind(self) -> str:
        return self.result.error.kind if self.result.error else self.result.status

    @property
    def retryable(self) -> bool:
        return bool(self.result.error and self.result.error.retryable)

    @property
    def retry_after(self) -> float | None:
        """Seconds the server asked to wait before trying again (its `Retry-After`), if it did."""
        return self.result.error.retry_after if self.result.error else None


class JobCancelled(JobFailed):
    """The job was cancelled (`job.cancel()`, `arkq cancel`)."""


# --- Inside a worker ------------------------------------------------------------------------------------


class LeaseLost(ArkqError):
    """The job's lease is no longer this attempt's (`arkq.lease`): another attempt owns the job, and
    this one must stop without writing anything more."""


class JobEnds(ArkqError):
    """The job ends now, without (another) attempt, with this error (`kind`, `message`; from an LLM
    call's `ModelError`, whether a caller may try again and when)."""

    def __init__(self, kind: str, message: str, *, retryable: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after

    @classmethod
    def of(cls, error: ModelError, message: str | None = None) -> JobEnds:
        """The job ends with the LLM call's error (`message`: its report, by default `str(error)`)."""
        report = str(error) if message is None else message
        return cls(error.kind, report, retryable=error.retryable, retry_after=error.retry_after)
