"""The gateway's Prometheus metrics: its requests by route and status, its open event streams, and the
fleet's figures read from Redis at each scrape (`arkq.metrics`), at `GET /metrics`.

Requests are labelled by route template (`/v1/jobs/{job_id}`), never by path, so that job IDs do not
become label values; paths that match no route count as `other`. An event stream is a request that
lasts as long as its job: it counts as open from its first byte to its last.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arkq.errors import RedisFailure
from arkq.metrics import REDIS_ERRORS, REQUEST_BUCKETS, hide_fleet, show_fleet

if TYPE_CHECKING:
    from gateway.app import Gateway

HTTP_REQUESTS = Counter(
    "arkq_http_requests", "HTTP requests the gateway answered, by route, method and status.",
    ["route", "method", "status"],
)  # fmt: skip
HTTP_DURATION = Histogram(
    "arkq_http_request_duration_seconds",
    "From a request's arrival until its response's last byte (an event stream: until it closed).",
    ["route", "method"],
    buckets=REQUEST_BUCKETS,
)
SSE_OPEN = Gauge("arkq_sse_streams_open", "Event streams the gateway is sending now, by route.", ["route"])

_EVENT_STREAM = b"text/event-stream"


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request, and the open event streams."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering
        stream_route: str | None = None

        async def sending(message: Message) -> None:
            nonlocal status, stream_route
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"content-type" and value.startswith(_EVENT_STREAM):
                        stream_route = _route(scope)
                        SSE_OPEN.labels(stream_route).inc()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            if stream_route is not None:
                SSE_OPEN.labels(stream_route).dec()
            route, method = _route(scope), _method(scope)
            HTTP_REQUESTS.labels(route, method, str(status)).inc()
            HTTP_DURATION.labels(route, method).observe(time.perf_counter() - started)


#: Methods counted by name; any other (a client may send what it likes) is `other`.
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"})


def _method(scope: Scope) -> str:
    method: str = scope["method"]
    return method if method in _METHODS else "other"


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "other"


async def metrics(request: Request) -> Response:
    """`GET /metrics`: Prometheus's text format. Open, as SGLang's is: it holds counts and timings,
    no prompts, keys or job contents. The fleet gauges are read from Redis first; a Redis that does
    not answer drops them and counts an error, and the scrape still succeeds."""
    gateway: Gateway = request.app.state.gateway
    try:
        found = await gateway.producer.status()  # bounded by redis.connect_timeout_s, as every read
    except RedisFailure:
        REDIS_ERRORS.inc()
        hide_fleet(gateway.config.llm.model_name)
    else:
        show_fleet(found, gateway.config.llm.model_name)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
