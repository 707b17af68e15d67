"""What a producer's caller may need to catch."""

from __future__ import annotations

from arkq.contract import JobResult


class InvalidRequest(ValueError):
    """The request was refused before anything reached Redis; the message names the field."""


class JobNotFound(LookupError):
    """Redis knows nothing of this job ID: never enqueued, or its events and result expired."""


class JobLost(LookupError):
    """The job is neither queued nor running, yet its events never reached an end: nothing more will
    come (arq dropped it without running it, or its events expired)."""


class JobFailed(Exception):
    """The job ended without a result text (`error` or `cancelled`); `result` holds why."""

    def __init__(self, result: JobResult):
        self.result = result
        error = result.error
        detail = f"{error.kind}: {error.message}" if error else result.status
        super().__init__(f"job {result.job_id} {result.status}: {detail}")

    @property
    def kind(self) -> str:
        return self.result.error.kind if self.result.error else self.result.status

    @property
    def retryable(self) -> bool:
        return bool(self.result.error and self.result.error.retryable)
