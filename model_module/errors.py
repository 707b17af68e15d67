"""Folding every way an LLM call can fail into one `ModelError` (defined in `arkq.errors`).

The openai SDK spreads failures over a dozen exception classes, HTTP statuses and in-stream error
objects; the functions here turn each into a `ModelError` whose `kind` says what happened and whose
`retryable` says whether the same request may succeed later.
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import socket
import time
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import aiohttp
import httpx2
import openai

from arkq.errors import ERROR_KINDS, RETRYABLE_KINDS, ArkqError, ErrorKind, ModelError

__all__ = [
    "ERROR_KINDS",
    "RETRYABLE_KINDS",
    "ConnectFailed",
    "ErrorKind",
    "ModelError",
    "bad_response",
    "from_openai_error",
    "from_stream_error",
    "kind_for_status",
    "parse_retry_after",
    "status_error",
    "stream_incomplete",
    "unreached",
]

# SGLang: "The input (N tokens) is longer than the model's context length (M tokens)." and
# "Requested token count exceeds the model's maximum context length ..."; OpenAI and vLLM word it
# "This model's maximum context length is N tokens" / code "context_length_exceeded".
_CONTEXT_OVERFLOW = re.compile(
    r"longer than the model'?s context length"
    r"|exceeds the model'?s maximum context length"
    r"|maximum context length is"
    r"|context_length_exceeded",
    re.IGNORECASE,
)


#: How much of an unexpected body a `bad_response` quotes: enough to recognise a login page, a proxy's
#: error page or another API's answer, short enough for one log line.
BODY_PREVIEW_BYTES = 120


def bad_response(url: str, status: int, content_type: str | None, body: bytes, expected: str) -> ModelError:
    """The server answered, but not as an OpenAI-compatible server would: a misconfiguration to fix.

    A login page, a proxy's error page or another web app at `llm.base_url` answers every try the same
    way, so it is not retried (retries would only hide it behind a backoff). The message carries what an
    operator needs to recognise the culprit without a packet capture: the URL, the status, the content
    type and the first bytes of the body."""
    preview = body[:BODY_PREVIEW_BYTES].decode("utf-8", "replace")
    more = "..." if len(body) > BODY_PREVIEW_BYTES else ""
    return ModelError(
        "bad_response",
        f"{url} answered with {content_type or 'no content type'}, not {expected}: {preview!r}{more}; "
        "does llm.base_url point at an OpenAI-compatible server (its URL usually ends in /v1)?",
        status_code=status,
    )


def is_context_overflow(message: str | None) -> bool:
    return bool(message) and _CONTEXT_OVERFLOW.search(message or "") is not None


def kind_for_status(status_code: int, message: str | None = None) -> ErrorKind:
    """The kind of an HTTP error status (or an in-stream error's numeric code)."""
    if status_code == 408:
        return "timeout"
    if status_code == 429:
        return "rate_limit"
    if status_code in (401, 403):
        return "auth"
    if 400 <= status_code < 500:
        return "context_overflow" if is_context_overflow(message) else "bad_request"
    return "server_error"


def parse_retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms` or `Retry-After` (seconds or an HTTP-date); None if absent.

    A date in the past means "now" (0.0). Unparseable values are ignored rather than failing the error
    path: a wrong header must not hide the real error.
    """
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = _header(headers, name)
        if raw is None:
            continue
        try:
            seconds = float(raw) / scale
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    raw_date = _header(headers, "retry-after")
    if not raw_date:
        return None
    try:
        when = email.utils.parsedate_to_datetime(raw_date)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP-dates are GMT; a "-0000" zone parses as naive
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None or isinstance(headers, httpx2.Headers):
        return value
    for key, candidate in headers.items():  # a plain dict: header names are case-insensitive
        if key.lower() == name:
            return candidate
    return None


class ConnectFailed(ArkqError):
    """No connection to the LLM server could be made (`os_error` says why): the cause under the link's
    `ModelError("connect")`, by which `unreached` knows that a request never reached the server."""

    def __init__(self, host: str, port: int, os_error: OSError) -> None:
        super().__init__(_unreached_text(host, port, os_error))
        self.host, self.port, self.os_error = host, port, os_error


def status_error(
    status_code: int, headers: Mapping[str, str], body: bytes, url: str, *, fallback: str = ""
) -> ModelError:
    """The `ModelError` for an HTTP error status, from the response's headers and (start of) body;
    `fallback` is its message when the body has none."""
    if status_code == 404:  # no such path: llm.base_url is not where the API is
        return bad_response(url, 404, _header(headers, "content-type"), body, "a chat completion")
    try:
        parsed: Any = json.loads(body) if body else None
    except ValueError:
        parsed = body.decode("utf-8", "replace")
    message = _status_message(parsed) or fallback or f"HTTP {status_code} from {url}"
    kind = kind_for_status(status_code, message)
    if kind == "bad_request" and _error_code(parsed) == "context_length_exceeded":
        kind = "context_overflow"
    return ModelError(kind, message, retry_after=parse_retry_after(headers), status_code=status_code)


def _status_message(body: Any) -> str | None:
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str) and inner["message"]:
            return str(inner["message"])
        if isinstance(inner, str) and inner:  # e.g. SGLang's 401 body {"error": "Unauthorized"}
            return inner
    if isinstance(body, str) and body:
        return body
    return None


def _error_code(body: Any) -> Any:
    if not isinstance(body, Mapping):
        return None
    inner = body.get("error", body)
    return inner.get("code") if isinstance(inner, Mapping) else None


def from_openai_error(exc: BaseException) -> ModelError:
    """Classify an exception raised by the openai client (or by the transport under it)."""
    if isinstance(exc, ModelError):
        return exc
    connector = _connector_error(exc)
    if connector is not None:  # before a timeout: the aiohttp transport calls every such failure one
        where = (str(connector.host), connector.port or 0)
        return ModelError("connect", _unreached_text(*where, connector.os_error))
    dropped = _connection_failed(exc)
    if isinstance(exc, openai.APITimeoutError) and not dropped:
        return ModelError("timeout", f"request timed out: {_cause_text(exc)}")
    if isinstance(exc, openai.APIConnectionError):
        return ModelError("connect", f"the connection to the LLM server failed: {_cause_text(exc)}")
    if isinstance(exc, openai.APIStatusError):
        response = exc.response
        try:
            content = response.content  # the client reads an error's body before raising
        except httpx2.ResponseNotRead:
            content = b""
        url = str(response.request.url)
        return status_error(exc.status_code, response.headers, content, url, fallback=exc.message)
    if isinstance(exc, openai.APIResponseValidationError):
        # A 2xx body that is not a chat completion: the same request will get the same answer.
        return ModelError("server_error", f"malformed response: {exc.message}", retryable=False)
    if isinstance(exc, openai.APIError):
        # The SDK's typed stream raises a bare APIError for an in-stream `{"error": ...}` event.
        body = exc.body if isinstance(exc.body, Mapping) else {"message": exc.message}
        return from_stream_error(body)
    if isinstance(exc, httpx2.TimeoutException) and not dropped:
        return ModelError("timeout", f"no data from the LLM server in time: {_cause_text(exc)}")
    if isinstance(exc, httpx2.RequestError):
        return ModelError("stream", f"the response stream broke: {_cause_text(exc)}")
    return ModelError("server_error", f"{type(exc).__name__}: {exc}", retryable=False)


def unreached(exc: BaseException) -> bool:
    """Whether `exc` (an error from the client, or the `ModelError` raised from one) means that no
    connection to the server could be made: refused, unknown host, unroutable. Such a request never
    reached the server, and neither would an abort of it."""
    seen: BaseException | None = exc.__cause__ if isinstance(exc, ModelError) else exc
    while seen is not None:
        if isinstance(seen, ConnectFailed):
            return True
        if isinstance(seen, aiohttp.ClientConnectorError) and not isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__
    return False


def _connector_error(exc: BaseException) -> aiohttp.ClientConnectorError | None:
    """The aiohttp error under `exc` that says no connection could be made, if that is what happened."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectorError) and not isinstance(seen, TimeoutError):
            return seen
        seen = seen.__cause__
    return None


def _unreached_text(host: str, port: int, reason: OSError) -> str:
    """One cause, in words: refused, unknown host, or the system's reason."""
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the LLM server's host {host!r} ({_os_reason(reason)}): is llm.base_url right?"
    if isinstance(reason, ConnectionRefusedError):
        return (
            f"the LLM server at {host}:{port} refused the connection: is it running, is llm.base_url right?"
        )
    return f"cannot connect to the LLM server at {host}:{port}: {_os_reason(reason)}"


def _os_reason(error: OSError) -> str:
    return error.strerror or str(error) or type(error).__name__


def _connection_failed(exc: BaseException) -> bool:
    """Whether aiohttp, under the client, failed to connect or lost the connection (not a timeout).

    The aiohttp transport (openai's `DefaultAioHttpClient`) reports those as connect *timeouts*; the
    aiohttp exception it chains as the cause says what happened."""
    cause = exc.__cause__
    while cause is not None:
        if isinstance(cause, aiohttp.ClientConnectionError) and not isinstance(cause, TimeoutError):
            return True
        cause = cause.__cause__
    return False


def from_stream_error(error: Mapping[str, Any] | Any) -> ModelError:
    """Classify SGLang's in-stream error object, the value of `data: {"error": {...}}`.

    SGLang puts the HTTP status it would have sent in `code` (e.g. 503 "The request queue is full.", 400
    for a prompt that is too long), so it is classified like a status; without a usable code, the
    `type` tells a client fault from a server one.
    """
    if not isinstance(error, Mapping):
        return ModelError("server_error", f"error in the response stream: {error!r}")
    raw_message = error.get("message")
    message = raw_message if isinstance(raw_message, str) and raw_message else "error in the response stream"
    code = _as_status(error.get("code"))
    if code is not None:
        return ModelError(kind_for_status(code, message), message, status_code=code)
    if is_context_overflow(message) or error.get("code") == "context_length_exceeded":
        return ModelError("context_overflow", message)
    err_type = str(error.get("type") or "").lower()
    if "badrequest" in err_type or "invalid_request" in err_type:
        return ModelError("bad_request", message)
    return ModelError("server_error", message)


def stream_incomplete(detail: str) -> ModelError:
    """The stream ended without its `[DONE]` terminator: the answer may be truncated."""
    return ModelError("stream", f"the response stream ended early: {detail}")


def _as_status(code: Any) -> int | None:
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code if 100 <= code <= 599 else None
    if isinstance(code, str) and code.isdigit():
        value = int(code)
        return value if 100 <= value <= 599 else None
    return None


def _cause_text(exc: BaseException) -> str:
    """The innermost cause that says something, once: the transport's own error (aiohttp's), not the
    wrappers above it (the SDK's and httpx's, whose names may say "timeout" for a dropped connection)."""
    said: BaseException | None = None
    seen: BaseException | None = exc.__cause__ or exc.__context__
    while seen is not None:
        if str(seen):
            said = seen
        if isinstance(seen, aiohttp.ClientError):
            break
        seen = seen.__cause__ or seen.__context__
    if said is not None:
        return f"{type(said).__name__}: {said}"
    return str(exc) or type(exc).__name__
