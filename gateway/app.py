"""The gateway's ASGI application: routes, keys, limits and the shared Redis resources.

Every request runs against Redis only (the producer's calls, bounded by `redis.connect_timeout_s`), so
gateway processes hold no state of their own and any of them can serve any job or resume any stream.
One Redis pool per process, bounded (`gateway.max_redis_connections`), serves commands and log reads;
live events come through the producer's one shared subscription (`producer.hub`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from arkq.connection import BlockingReadyCheckedPool, redis_options
from arkq.errors import ArkqError
from config_module import loader
from config_module.settings import ArkConfig
from gateway import console, streams
from gateway.auth import Keys
from gateway.chat import ChatCall, completion, parse_chat_request
from gateway.errors import ApiError, api_error, not_found_job
from gateway.metrics import RequestMetrics, metrics
from producer import Job, Producer

logger = logging.getLogger("arkq.gateway")

#: The name a gateway's Redis connections carry (`CLIENT SETNAME`).
REDIS_CLIENT_NAME = "arkq-gateway"
#: The response header that names the job behind every answer.
JOB_ID_HEADER = "X-Arkq-Job-Id"


class Gateway:
    """What the routes share: the configuration, the keys and the producer (whose jobs' readers share
    one subscription)."""

    def __init__(self, config: ArkConfig, redis_url: str | None = None):
        self.config = config
        self.keys = Keys(config.gateway.api_keys)
        self._redis_url = redis_url
        self._tasks: set[asyncio.Task[Any]] = set()
        self.redis: Redis
        self.producer: Producer

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        options = redis_options(self.config, self._redis_url)
        pool = BlockingReadyCheckedPool.from_url(
            options.url,
            max_connections=self.config.gateway.max_redis_connections,
            timeout=self.config.redis.connect_timeout_s,
            client_name=REDIS_CLIENT_NAME,  # `CLIENT LIST` shows which connections are a gateway's
            **options.client_kwargs(),
        )
        self.redis = Redis.from_pool(pool)
        self.producer = Producer(config=self.config, redis=self.redis)
        try:
            yield
        finally:
            await self.producer.aclose()  # its shared subscription; the Redis client is closed below
            for task in tuple(self._tasks):
                await task
            await self.redis.aclose()

    def in_background(self, coroutine: Any) -> None:
        """Run `coroutine` to its end even if the request that started it is gone (a cancel)."""
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the pieces every route uses ------------------------------------------------------------

    def tenant(self, request: Request) -> str:
        tenant = self.keys.tenant_for(request.headers.get("authorization"))
        if tenant is None:
            raise ApiError(
                401,
                "no valid API key: send `Authorization: Bearer <key>` with a key from gateway.api_keys",
                code="invalid_api_key",
            )
        return tenant

    async def body(self, request: Request) -> Any:
        """The request's JSON body, refused (413) past `gateway.max_body_bytes` before it is all read."""
        limit = self.config.gateway.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        body = bytearray()
        async for piece in request.stream():
            body += piece
            if len(body) > limit:
                raise _too_large(len(body), limit)
        try:
            return json.loads(body)
        except ValueError as error:
            raise ApiError(400, f"the request body is not JSON: {error}") from None

    def reader(self, request: Request, job_id: str) -> str:
        """The tenant reading a job's events: by its key, or by the job's stream token (`?token=`)."""
        token = request.query_params.get("token")
        if token is not None and "authorization" not in request.headers and self.keys:
            tenant = self.keys.tenant_for_stream(token, job_id, time.time())
            if tenant is None:
                raise ApiError(
                    401, "the stream token is not valid for this job, or has expired", code="invalid_token"
                )
            return tenant
        return self.tenant(request)

    def events_url(self, job_id: str, tenant: str) -> str:
        """Where the job's events stream; with keys, carrying a token for clients that cannot send a
        header (a browser's EventSource), valid as long as the job's events are kept."""
        path = f"/v1/jobs/{job_id}/events"
        if not self.keys:
            return path
        expires = int(time.time() + self.config.streaming.replay_ttl_s + self.config.worker.job_timeout_s)
        return f"{path}?token={self.keys.stream_token(tenant, job_id, expires)}"

    async def owned_job(self, job_id: str, tenant: str) -> Job:
        """The tenant's job `job_id`; 404 for one that does not exist and for another tenant's alike."""
        job = self.producer.job(job_id)
        if not _plausible_id(job_id):
            raise not_found_job(job_id)
        owner = await job.tenant()
        if self.keys and owner != tenant:
            raise not_found_job(job_id)
        return job

    async def enqueue(self, call: ChatCall, tenant: str, job_id: str | None = None) -> Job:
        job = await self.producer.enqueue(
            **call.enqueue,
            metadata=call.metadata,
            job_id=job_id,
            tenant=tenant,
            max_active=self.config.gateway.max_active_jobs_per_key,
        )
        logger.info(
            "job %s enqueued for %s",
            job.id,
            tenant,
            extra={"event": "enqueued", "job_id": job.id, "tenant": tenant},
        )
        return job

    def chat_call(self, body: Any, *, stream_allowed: bool = True) -> ChatCall:
        call = parse_chat_request(
            body, default_model=self.config.llm.model_name, stream_allowed=stream_allowed
        )
        if call.model != self.config.llm.model_name:
            raise ApiError(
                404,
                f"the model {call.model!r} does not exist here: the workers serve "
                f"{self.config.llm.model_name!r}",
                param="model",
                code="model_not_found",
            )
        return call


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is {size} bytes, over gateway.max_body_bytes={limit}",
        code="request_too_large",
    )


def _plausible_id(job_id: str) -> bool:
    from producer.producer import JOB_ID_PATTERN

    return JOB_ID_PATTERN.fullmatch(job_id) is not None


def idempotent_job_id(tenant: str, key: str) -> str:
    """The job ID for an `Idempotency-Key`: the same key from the same tenant names the same job, and
    never another tenant's."""
    return "idem-" + hashlib.sha256(f"{tenant}\x00{key}".encode()).hexdigest()[:40]


# --- Routes ------------------------------------------------------------------------------------------


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def chat_completions(request: Request) -> Response:
    gateway = _gateway(request)
    tenant = gateway.tenant(request)
    call = gateway.chat_call(await gateway.body(request))
    job = await gateway.enqueue(call, tenant)
    cancel = gateway.config.gateway.cancel_on_disconnect
    if request.headers.get("x-arkq-on-disconnect", "").lower() == "continue":
        cancel = False
    headers = {JOB_ID_HEADER: job.id}
    if call.stream:
        return streams.chat_stream(gateway, request, job, call, cancel_on_disconnect=cancel, headers=headers)
    result = await streams.wait_for_result(gateway, request, job, cancel_on_disconnect=cancel)
    if result is None:  # the client has gone: 499, nginx's "client closed request", reaches nobody
        return Response(status_code=499, headers=headers)
    if result.status != "done":
        return streams.job_failure(result).response(headers)
    return JSONResponse(completion(result, model=call.model), headers=headers)


async def models(request: Request) -> Response:
    gateway = _gateway(request)
    gateway.tenant(request)
    model = gateway.config.llm.model_name
    return JSONResponse(
        {"object": "list", "data": [{"id": model, "object": "model", "created": 0, "owned_by": "arkq"}]}
    )


async def create_job(request: Request) -> Response:
    gateway = _gateway(request)
    tenant = gateway.tenant(request)
    call = gateway.chat_call(await gateway.body(request), stream_allowed=False)
    key = request.headers.get("idempotency-key")
    job_id = None if key is None else idempotent_job_id(tenant, key)
    job = await gateway.enqueue(call, tenant, job_id)
    found = {**await job_object(job), "events_url": gateway.events_url(job.id, tenant)}
    return JSONResponse(found, status_code=202, headers={JOB_ID_HEADER: job.id})


async def get_job(request: Request) -> Response:
    gateway = _gateway(request)
    tenant = gateway.tenant(request)
    job = await gateway.owned_job(request.path_params["job_id"], tenant)
    found = await job_object(job)
    if found["status"] == "unknown":
        raise not_found_job(job.id)
    found["events_url"] = gateway.events_url(job.id, tenant)
    return JSONResponse(found, headers={JOB_ID_HEADER: job.id})


async def job_events(request: Request) -> Response:
    gateway = _gateway(request)
    job_id = request.path_params["job_id"]
    job = await gateway.owned_job(job_id, gateway.reader(request, job_id))
    after = request.headers.get("last-event-id", request.query_params.get("after"))
    try:
        from_seq = 0 if after is None or after == "" else int(after) + 1
    except ValueError:
        raise ApiError(400, f"Last-Event-ID / after: {after!r} is not an event seq", param="after") from None
    if from_seq < 0:
        raise ApiError(400, "after: must be -1 or more", param="after")
    if not await job.exists():
        raise not_found_job(job.id)
    if await job.fetch_result() is not None and from_seq >= await job.event_count():
        # Past the end of an ended job: 204 tells a browser's EventSource to stop reconnecting.
        return Response(status_code=204, headers={JOB_ID_HEADER: job.id})
    return streams.event_stream(gateway, job, from_seq, headers={JOB_ID_HEADER: job.id})


async def cancel_job(request: Request) -> Response:
    gateway = _gateway(request)
    job = await gateway.owned_job(request.path_params["job_id"], gateway.tenant(request))
    if await job.cancel() == "unknown":
        raise not_found_job(job.id)
    return JSONResponse(await job_object(job), headers={JOB_ID_HEADER: job.id})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway = _gateway(request)
    try:
        async with asyncio.timeout(gateway.config.redis.connect_timeout_s):
            await gateway.redis.ping()
    except Exception as error:  # any failure to answer is "not ready", and says why
        return ApiError(
            503, f"Redis does not answer: {str(error) or type(error).__name__}", type="server_error"
        ).response()
    return JSONResponse({"status": "ready"})


async def status(request: Request) -> Response:
    """The fleet's status (`arkq.status.FleetStatus`, as `arkq status --json` prints it), for any key.

    With keys, several tenants share the fleet: the failures are told by kind, count and time only,
    not by job ID or message, which are other tenants' business."""
    gateway = _gateway(request)
    gateway.tenant(request)
    found = await gateway.producer.status()
    if gateway.keys:
        for group in found.failures:
            group.last_job_id, group.last_message = "", ""
    return JSONResponse(found.model_dump(mode="json"))


async def job_object(job: Job) -> dict[str, Any]:
    """The `arkq.job` object: status, and once ended the result or the error."""
    state = await job.state()
    found: dict[str, Any] = {
        "id": job.id,
        "object": "arkq.job",
        "status": state.status,
        "created_at": None if state.enqueued_at is None else int(state.enqueued_at),
    }
    result = state.result
    if result is not None:
        if result.status == "done":
            found["result"] = {
                "text": result.text,
                "parsed": result.parsed,
                "reasoning": result.reasoning or None,
                "tool_calls": result.tool_calls,
                "finish_reason": result.finish_reason,
                "usage": result.usage,
                "attempts": result.attempts,
            }
        elif result.error is not None:
            found["error"] = result.error.model_dump()
        found["timings"] = result.timings.model_dump()
        found["finished_at"] = int(result.timings.finished_at)
    return found


# --- The application ------------------------------------------------------------------------------


async def _api_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error.response()


async def _arkq_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, ArkqError)
    return api_error(error).response()


def create_app(config: ArkConfig | None = None, *, redis_url: str | None = None) -> Starlette:
    """The gateway for `config` (default: the loaded configuration)."""
    gateway = Gateway(config or loader.config, redis_url)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with gateway.running():
            yield

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/jobs", create_job, methods=["POST"]),
            Route("/v1/jobs/{job_id}", get_job, methods=["GET"]),
            Route("/v1/jobs/{job_id}/events", job_events, methods=["GET"]),
            Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/v1/status", status, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *console.routes,
        ],
        middleware=[Middleware(RequestMetrics)],
        exception_handlers={ApiError: _api_error, ArkqError: _arkq_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.state.started_at = time.time()
    return app
