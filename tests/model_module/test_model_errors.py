"""How every failure the openai client (or SGLang's stream) can produce maps onto ModelError."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx2
import openai
import pytest

from model_module.errors import (
    BODY_PREVIEW_BYTES,
    RETRYABLE_KINDS,
    ModelError,
    bad_response,
    from_openai_error,
    from_stream_error,
    kind_for_status,
    parse_retry_after,
    stream_incomplete,
)

REQUEST = httpx2.Request("POST", "http://llm.test/v1/chat/completions")
SGLANG_TOO_LONG = "The input (40000 tokens) is longer than the model's context length (32768 tokens)."
SGLANG_TOO_MANY = (
    "Requested token count exceeds the model's maximum context length of 32768 tokens. You requested a "
    "total of 33792 tokens: 32768 tokens from the input messages and 1024 tokens for the completion."
)


def status_error(
    status: int, message: str = "boom", headers: dict[str, str] | None = None
) -> openai.APIStatusError:
    """The exception the client raises for `status`, built the way the client builds it."""
    body = {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": status}
    response = httpx2.Response(status, headers=headers, json=body, request=REQUEST)
    client = openai.AsyncOpenAI(base_url="http://llm.test/v1", api_key="-")
    return client._make_status_error_from_response(response)


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (400, "bad_request", False),
        (401, "auth", False),
        (403, "auth", False),
        (408, "timeout", True),
        (409, "bad_request", False),
        (413, "bad_request", False),
        (422, "bad_request", False),
        (429, "rate_limit", True),
        (500, "server_error", True),
        (502, "server_error", True),
        (503, "server_error", True),
        (504, "server_error", True),
    ],
)
def test_http_status_maps_to_kind(status: int, kind: str, retryable: bool) -> None:
    exc = status_error(status, "something went wrong")
    error = from_openai_error(exc)
    assert (error.kind, error.retryable, error.status_code) == (kind, retryable, status)
    assert error.message == "something went wrong"


@pytest.mark.parametrize(
    "message", [SGLANG_TOO_LONG, SGLANG_TOO_MANY, "This model's maximum context length is 8192"]
)
def test_context_overflow_messages(message: str) -> None:
    error = from_openai_error(status_error(400, message))
    assert error.kind == "context_overflow"
    assert not error.retryable
    assert error.message == message


def test_404_is_a_bad_response_naming_what_answered() -> None:
    """A 404 on the completions path means llm.base_url is not where the API is: never retried."""
    error = from_openai_error(status_error(404, "The model `m` does not exist."))
    assert (error.kind, error.retryable, error.status_code) == ("bad_response", False, 404)
    assert error.message.startswith("http://llm.test/v1/chat/completions answered with application/json")
    assert "The model `m` does not exist." in error.message  # the server's own words, quoted
    assert "does llm.base_url point at an OpenAI-compatible server" in error.message


def test_bad_response_quotes_only_the_start_of_the_body() -> None:
    page = b"<html>" + "é".encode() * 200 + b"</html>"
    error = bad_response("http://x/v1/chat/completions", 200, "text/html", page, "a text/event-stream stream")
    assert (error.kind, error.retryable, error.status_code) == ("bad_response", False, 200)
    assert str(error).startswith(
        "bad_response (HTTP 200): http://x/v1/chat/completions answered with text/html, "
        "not a text/event-stream stream: '<html>éé"
    )
    assert "</html>" not in error.message
    assert error.message.count("é") < BODY_PREVIEW_BYTES and "'..." in error.message
    short = bad_response("http://x", 200, None, b"OK", "a JSON chat completion")
    assert "with no content type, not a JSON chat completion: 'OK';" in short.message


def test_other_400_is_bad_request() -> None:
    error = from_openai_error(status_error(400, "Invalid grammar request: bad schema"))
    assert error.kind == "bad_request"


def test_timeout_and_connect_errors() -> None:
    timeout = from_openai_error(openai.APITimeoutError(request=REQUEST))
    connect = from_openai_error(openai.APIConnectionError(request=REQUEST))
    assert (timeout.kind, timeout.retryable) == ("timeout", True)
    assert (connect.kind, connect.retryable) == ("connect", True)


def test_transport_errors_while_reading_a_stream() -> None:
    cut = from_openai_error(httpx2.RemoteProtocolError("peer closed connection", request=REQUEST))
    silent = from_openai_error(httpx2.ReadTimeout("timed out", request=REQUEST))
    assert (cut.kind, cut.retryable) == ("stream", True)
    assert (silent.kind, silent.retryable) == ("timeout", True)


def test_sdk_in_stream_api_error() -> None:
    body = {"message": "The request queue is full.", "type": "ServiceUnavailable", "code": 503}
    error = from_openai_error(openai.APIError("The request queue is full.", REQUEST, body=body))
    assert (error.kind, error.status_code, error.retryable) == ("server_error", 503, True)


def test_unknown_exception_is_not_retried() -> None:
    error = from_openai_error(RuntimeError("bug"))
    assert error.kind == "server_error"
    assert not error.retryable


@pytest.mark.parametrize(
    ("payload", "kind", "retryable"),
    [
        (
            {"message": "The request queue is full.", "type": "ServiceUnavailable", "code": 503},
            "server_error",
            True,
        ),
        (
            {"message": "Internal server error", "type": "InternalServerError", "code": 500},
            "server_error",
            True,
        ),
        ({"message": SGLANG_TOO_LONG, "type": "BadRequestError", "code": 400}, "context_overflow", False),
        ({"message": "bad value", "type": "BadRequestError", "code": 400}, "bad_request", False),
        ({"message": "slow down", "code": "429"}, "rate_limit", True),
        ({"message": "bad value", "type": "BadRequestError"}, "bad_request", False),
        ({"message": "too long", "code": "context_length_exceeded"}, "context_overflow", False),
        ({"message": "who knows"}, "server_error", True),
        ({}, "server_error", True),
    ],
)
def test_in_stream_error_objects(payload: dict[str, object], kind: str, retryable: bool) -> None:
    error = from_stream_error(payload)
    assert (error.kind, error.retryable) == (kind, retryable)
    assert error.message


def test_stream_incomplete_is_retryable_stream_error() -> None:
    error = stream_incomplete("no [DONE]")
    assert (error.kind, error.retryable) == ("stream", True)


def test_kind_for_status_edges() -> None:
    assert kind_for_status(400, SGLANG_TOO_LONG) == "context_overflow"
    assert kind_for_status(599) == "server_error"


def test_retry_after_seconds_and_ms() -> None:
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after(httpx2.Headers({"RETRY-AFTER": "2"})) == 2.0
    assert parse_retry_after({}) is None
    assert parse_retry_after(None) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-5"}) == 0.0


def test_retry_after_http_date() -> None:
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    later = format_datetime(datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC), usegmt=True)
    assert later.endswith("GMT")
    assert parse_retry_after({"retry-after": later}, now=now.timestamp()) == pytest.approx(30.0)
    earlier = format_datetime(datetime(2026, 11, 25, 11, 0, 0, tzinfo=UTC), usegmt=True)
    assert parse_retry_after({"retry-after": earlier}, now=now.timestamp()) == 0.0


def test_retry_after_reaches_the_error() -> None:
    error = from_openai_error(status_error(503, "busy", headers={"Retry-After": "7"}))
    assert error.retry_after == 7.0
    limited = from_openai_error(status_error(429, "slow down", headers={"retry-after-ms": "1500"}))
    assert (limited.kind, limited.retry_after) == ("rate_limit", 1.5)


def test_model_error_fields_str_and_pickle() -> None:
    error = ModelError("rate_limit", "slow down", retry_after=2.0, status_code=429)
    assert error.retryable
    assert str(error) == "rate_limit (HTTP 429): slow down"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.kind, copy.message, copy.retryable, copy.retry_after, copy.status_code) == (
        "rate_limit",
        "slow down",
        True,
        2.0,
        429,
    )
    assert ModelError("stream", "x", retryable=False).retryable is False
    with pytest.raises(ValueError, match="unknown ModelError kind"):
        ModelError("nope", "x")  # type: ignore[arg-type]


def test_retryable_kinds_are_the_documented_ones() -> None:
    assert frozenset({"timeout", "connect", "rate_limit", "server_error", "stream"}) == RETRYABLE_KINDS
    assert "bad_response" not in RETRYABLE_KINDS and not ModelError("bad_response", "x").retryable


def test_malformed_success_body_is_not_retried() -> None:
    response = httpx2.Response(200, json={"unexpected": True}, request=REQUEST)
    error = from_openai_error(openai.APIResponseValidationError(response, {"unexpected": True}))
    assert (error.kind, error.retryable) == ("server_error", False)
