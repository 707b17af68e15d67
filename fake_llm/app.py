"""HTTP routes of the emulator (aiohttp), mirroring SGLang's ``http_server.py``."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypedDict

from aiohttp import web
from aiohttp.typedefs import Middleware

from . import completion
from .batching import BatchingConfig, DecodeClock
from .completion import Turn, fault_error
from .directives import DirectiveError, Directives, FaultBudget, parse_directives
from .generation import GrammarError, estimate_prompt_tokens, plan_output
from .metrics import CONTENT_TYPE, SGLangMetrics
from .protocol import ChatRequest, EmulatedApiError, parse_chat_request
from .registry import Registry
from .stats import Stats
from .wire import ChunkEncoder, dumps, error_body, model_card

__all__ = ["STATE", "AppOptions", "FakeLLMState", "create_app"]

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class FakeLLMState:
    """Configuration and live state of one emulator instance."""

    model: str
    ttft_ms: float
    itl_ms: float
    context_length: int
    api_key: str | None
    batching: BatchingConfig | None = None  # None: each request paced on its own timer
    stats: Stats = field(default_factory=Stats)
    registry: Registry = field(default_factory=Registry)
    budget: FaultBudget = field(default_factory=FaultBudget)
    clock: DecodeClock | None = field(init=False, default=None)
    metrics: SGLangMetrics = field(init=False)

    def __post_init__(self) -> None:
        if self.batching is not None:
            self.clock = DecodeClock(self.batching, self.stats)
            self.stats.pacing = "batched"
        self.metrics = SGLangMetrics(self.model, running=self._running, queued=self._queued)

    def _queued(self) -> int:
        """Requests waiting for their prefill (batched pacing; per request, none ever waits)."""
        return self.clock.waiting if self.clock is not None else 0

    def _running(self) -> int:
        return max(0, len(self.registry) - self._queued())  # a reused rid counts once in the registry


STATE = web.AppKey("arkq_fake_llm_state", FakeLLMState)


class AppOptions(TypedDict, total=False):
    """The options of :func:`create_app`, for the helpers that pass them through to it."""

    model: str
    ttft_ms: float
    itl_ms: float
    context_length: int
    api_key: str | None
    batching: BatchingConfig | None


def create_app(
    *,
    model: str = "tgi",
    ttft_ms: float = 0,
    itl_ms: float = 0,
    context_length: int = 32768,
    api_key: str | None = None,
    batching: BatchingConfig | None = None,
) -> web.Application:
    """Build the emulator application (see the package docstring for its behaviour).

    ``ttft_ms``/``itl_ms`` pace each request on its own timer; ``batching`` paces them all with one
    decode clock instead (:mod:`fake_llm.batching`), and then leaves no default per-request delay to
    set (a request's own ``ttft_ms``/``itl_ms`` directive still puts it on its own timer)."""
    if ttft_ms < 0 or itl_ms < 0:
        raise ValueError("ttft_ms and itl_ms must not be negative")
    if context_length < 1:
        raise ValueError("context_length must be positive")
    if batching is not None and (ttft_ms or itl_ms):
        raise ValueError(
            "ttft_ms and itl_ms pace each request on its own timer; with batching the decode clock paces "
            "them (step_ms, step_ms_per_request, prefill_ms, prefill_ms_per_token)"
        )
    state = FakeLLMState(
        model=model,
        ttft_ms=ttft_ms,
        itl_ms=itl_ms,
        context_length=context_length,
        api_key=api_key,
        batching=batching,
    )
    middlewares = [_auth_middleware(api_key)] if api_key else []
    middlewares.append(_not_found_middleware(state.stats))
    app = web.Application(middlewares=middlewares, client_max_size=64 * 1024 * 1024)
    app[STATE] = state
    if state.clock is not None:
        app.on_cleanup.append(_closer(state.clock))
    app.router.add_get("/health", _health)
    app.router.add_get("/health_generate", _health)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/v1/models/{model:.+}", _model)
    app.router.add_get("/get_model_info", _model_info)
    app.router.add_get("/model_info", _model_info)
    app.router.add_get("/get_server_info", _server_info)
    app.router.add_get("/server_info", _server_info)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/abort_request", _abort_request)
    app.router.add_get("/stats", _stats)
    app.router.add_get("/metrics", _metrics)
    return app


# -- plumbing ----------------------------------------------------------------------------


def _closer(clock: DecodeClock) -> Callable[[web.Application], Awaitable[None]]:
    async def close(app: web.Application) -> None:
        await clock.close()

    return close


def _json(value: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(value), status=status, headers=headers, content_type="application/json")


def _error_response(error: EmulatedApiError) -> web.Response:
    body = error.body if error.body is not None else error_body(error.message, error.err_type, error.status)
    return _json(body, status=error.status, headers=error.headers)


def _auth_middleware(api_key: str) -> Middleware:
    """SGLang's ``add_api_key_middleware``: /health* and /metrics stay open.

    ``/stats`` is the emulator's own endpoint and stays open too, so harnesses can read it
    without knowing the key.
    """
    expected = "Bearer " + api_key

    @web.middleware
    async def auth(request: web.Request, handler: _Handler) -> web.StreamResponse:
        path = request.path
        if (
            request.method == "OPTIONS"
            or path.startswith(("/health", "/metrics"))
            or path == "/stats"
            or request.headers.get("Authorization") == expected
        ):
            return await handler(request)
        return _json({"error": "Unauthorized"}, status=401)

    return auth


def _not_found_middleware(stats: Stats) -> Middleware:
    """A path the server does not have: FastAPI's 404 body, as SGLang answers it, counted in
    ``stats.not_found`` so that a test can see a client knock at the wrong door (a base URL without
    ``/v1``) and how many times."""

    @web.middleware
    async def not_found(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            stats.not_found += 1
            return _json({"detail": "Not Found"}, status=404)

    return not_found


async def _read_json(request: web.Request) -> object:
    media_type = request.content_type.lower()
    if media_type != "application/json":
        raise EmulatedApiError(
            "1 validation error:\n  {'loc': ['header', 'content-type'], 'msg': \"Unsupported Media Type: "
            "Only 'application/json' is allowed\", 'type': 'value_error'}",
            err_type="Bad Request",
        )
    raw = await request.read()
    try:
        return json.loads(raw)
    except ValueError as exc:
        error = {"type": "json_invalid", "loc": ("body", getattr(exc, "pos", 0)), "msg": "JSON decode error"}
        raise EmulatedApiError(
            f"1 validation error:\n  {error!r} {[error]!r}", err_type="Bad Request"
        ) from None


# -- routes ------------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    card = model_card(state.model, state.context_length, int(time.time()))
    return _json({"object": "list", "data": [card]})


async def _model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["model"]
    if name != state.model:
        error = {
            "message": f"The model '{name}' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
        return _json({"error": error}, status=404)
    return _json(model_card(name, state.context_length, int(time.time())))


async def _model_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _json(
        {
            "model_path": state.model,
            "tokenizer_path": state.model,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
        }
    )


async def _server_info(request: web.Request) -> web.Response:
    """SGLang's ``/get_server_info`` (``/server_info`` in newer versions): its server arguments, with the
    scheduler's figures, its internal states and its version (``entrypoints/http_server.py``). Only the
    arguments that describe what this emulator serves; no ``model_path`` or ``tokenizer_path``: the
    SGLang router reads the model's name from ``served_model_name`` (``model_path`` otherwise) when a
    worker registers, and given a path it fetches that model's tokenizer from the Hugging Face hub,
    which an emulator has no model on."""
    state = request.app[STATE]
    return _json(
        {
            "served_model_name": state.model,
            "context_length": state.context_length,
            "enable_metrics": True,
            "is_embedding": False,
            "internal_states": [],
            "version": "arkq fake-llm",  # what answers, not an SGLang release
        }
    )


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats.snapshot())


async def _metrics(request: web.Request) -> web.Response:
    """SGLang's metrics (``--enable-metrics``) for this emulator's requests: see :mod:`fake_llm.metrics`."""
    body = request.app[STATE].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _abort_request(request: web.Request) -> web.Response:
    """Abort by rid; unknown rids are a silent no-op (200), exactly as in SGLang."""
    state = request.app[STATE]
    try:
        body = await _read_json(request)
    except EmulatedApiError as error:
        return _error_response(error)
    if not isinstance(body, dict):
        return _error_response(
            EmulatedApiError("abort_request expects a JSON object", err_type="Bad Request")
        )
    if body.get("abort_all"):
        state.registry.abort_all()
    elif isinstance(body.get("rid"), str):
        state.registry.abort(body["rid"])
    return web.Response(status=200)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    stats = state.stats
    stats.requests += 1
    stats.active += 1
    try:
        return await _chat(request, state, created=time.monotonic())
    except EmulatedApiError as error:
        stats.errors += 1
        return _error_response(error)
    finally:
        stats.active -= 1


#: What a strict OpenAI-compatible server answers (400) for a parameter it does not know.
UNRECOGNIZED_ARGUMENT = "Unrecognized request argument supplied: "


async def _chat(request: web.Request, state: FakeLLMState, *, created: float) -> web.StreamResponse:
    chat = parse_chat_request(await _read_json(request), context_length=state.context_length)
    try:
        faults = state.budget.apply(parse_directives(chat.texts))
    except DirectiveError as exc:
        raise EmulatedApiError(str(exc)) from None
    if faults.refuse_continue and chat.continue_final_message:
        raise EmulatedApiError(f"{UNRECOGNIZED_ARGUMENT}continue_final_message")
    prompt_tokens = _check_context(chat, faults, state)

    if faults.status is not None:
        state.stats.faults += 1
        raise fault_error(faults.status, faults.retry_after)
    if faults.html:
        state.stats.faults += 1
        return completion.login_page()
    if faults.flip_stream:
        state.stats.faults += 1

    rid = chat.rid or uuid.uuid4().hex
    try:
        plan = plan_output(chat, faults)
    except GrammarError as exc:
        message = exc.sglang_message
        if not chat.stream:
            raise EmulatedApiError(message) from None
        state.stats.errors += 1
        usage = ChunkEncoder(rid, chat.model).usage(prompt_tokens, 0, 0) if chat.include_usage else None
        return await completion.reject_stream(request, message=message, code=400, usage=usage)

    active = state.registry.open(rid)
    # A request that sets its own pacing keeps its own timer, out of the batch.
    own_timer = faults.ttft_ms is not None or faults.itl_ms is not None
    try:
        turn = Turn(
            request=chat,
            plan=plan,
            faults=faults,
            rid=rid,
            prompt_tokens=prompt_tokens,
            ttft=(faults.ttft_ms if faults.ttft_ms is not None else state.ttft_ms) / 1000,
            itl=(faults.itl_ms if faults.itl_ms is not None else state.itl_ms) / 1000,
            active=active,
            stats=state.stats,
            metrics=state.metrics,
            created=created,
            clock=None if own_timer else state.clock,
        )
        if chat.stream != faults.flip_stream:
            return await completion.stream(request, turn)
        return await completion.complete(request, turn)
    finally:
        state.registry.close(active)


def _check_context(chat: ChatRequest, faults: Directives, state: FakeLLMState) -> int:
    """The tokenizer manager's length checks, worded as SGLang words them."""
    prompt_tokens = estimate_prompt_tokens(chat)
    context = state.context_length
    if faults.context_overflow:
        state.stats.faults += 1
        prompt_tokens = max(prompt_tokens, context + 1)
    if prompt_tokens >= context:
        raise EmulatedApiError(
            f"The input ({prompt_tokens} tokens) is longer than the model's "
            f"context length ({context} tokens)."
        )
    if chat.max_tokens is not None and chat.max_tokens + prompt_tokens >= context:
        total = chat.max_tokens + prompt_tokens
        raise EmulatedApiError(
            f"Requested token count exceeds the model's maximum context length of {context} tokens. "
            f"You requested a total of {total} tokens: {prompt_tokens} tokens from the input messages and "
            f"{chat.max_tokens} tokens for the completion. Please reduce the number of tokens in the input "
            "messages or the completion to fit within the limit."
        )
    return prompt_tokens
