"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status that
matches, so that an OpenAI SDK raises the class its users already catch (`BadRequestError`,
`AuthenticationError`, `NotFoundError`, `RateLimitError`, ...)."""

from __future__ import annotations

from starlette.responses import JSONResponse

from arkq.errors import (
    ArkqError,
    InvalidRequest,
    JobIdInUse,
    JobLost,
    JobNotFound,
    QueueFull,
    RedisFailure,
    RedisUnavailable,
    TenantLimitReached,
)

#: Seconds a client is asked to wait (`Retry-After`) when the queue or Redis cannot take it now.
RETRY_AFTER_S = 1


class ApiError(ArkqError):
    """An HTTP error answer (the gateway's own; arkq errors become one through `api_error`). `param`
    names the request field at fault, when one is."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        headers = dict(headers or {})
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


#: Our field names where the OpenAI request calls them otherwise.
OPENAI_PARAM = {"json_schema": "response_format", "json_object": "response_format"}


def api_error(error: ArkqError) -> ApiError:
    """The HTTP answer for an arkq error raised while serving a request."""
    if isinstance(error, JobIdInUse):
        # An Idempotency-Key sent again with another body (the IETF draft on idempotency keys: 422).
        message = f"the Idempotency-Key names a job with another request; nothing was enqueued: {error}"
        return ApiError(422, message, code="idempotency_key_reused")
    if isinstance(error, InvalidRequest):
        return ApiError(400, str(error), param=OPENAI_PARAM.get(error.field or "", error.field))
    if isinstance(error, TenantLimitReached):
        return ApiError(
            429, str(error), type="rate_limit_error", code="active_jobs_limit", retry_after=RETRY_AFTER_S
        )
    if isinstance(error, QueueFull):
        return ApiError(
            429, str(error), type="rate_limit_error", code="queue_full", retry_after=RETRY_AFTER_S
        )
    if isinstance(error, RedisUnavailable):
        return ApiError(
            503,
            f"the queue is unavailable: {error}",
            type="server_error",
            code="redis_unavailable",
            retry_after=RETRY_AFTER_S,
        )
    if isinstance(error, RedisFailure):
        return ApiError(
            503, f"the queue refused the call: {error}", type="server_error", code="redis_refused"
        )
    if isinstance(error, JobNotFound):
        return not_found_job(error.job_id)
    if isinstance(error, JobLost):
        return ApiError(502, str(error), type="server_error", code="job_lost")
    return ApiError(500, f"{type(error).__name__}: {error}", type="server_error")


def not_found_job(job_id: str) -> ApiError:
    """The same answer for a job that does not exist and for another tenant's: nothing leaks."""
    return ApiError(404, f"no job {job_id!r}", param="job_id", code="job_not_found")
