"""`ArkModelLink`: the one way arkq talks to the SGLang (OpenAI-compatible) server.

It keeps the ARKOS model module's API (`generate_response`, `generate_stream`, `make_llm_call`) and
adds `stream`, the typed event stream, and `relay`, the same events told to a callback as they are read
(what the worker uses). Compared with the ARKOS version:

* one `AsyncOpenAI` per link, not one per call: a new client costs ~20 ms and a fresh connection pool;
* failures raise `ModelError` instead of returning "Error: ..." strings that would reach users as
  answers;
* the link is the only retry layer (`max_retries=0` on the client) and retries only before the first
  delta: after that, the caller has already forwarded tokens and a silent restart would duplicate them;
* streams do not go through the SDK: an asyncio Protocol reads them (`model_module.http_stream`), one
  JSON decode per chunk and no task switch, because at a GPU's pace what a chunk costs is what a worker
  core can relay, and the SDK's path costs more than twice as much per chunk;
* an answer that is not what an OpenAI-compatible server sends (a login page, a 404, JSON for a
  stream) is a `bad_response` naming what came back, never retried: the SDK would hand a non-stream
  call the page as a string, and a stream would end "without [DONE]" and be retried as a broken one.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import httpx2
import openai
from openai import AsyncOpenAI, DefaultAioHttpClient
from pydantic import SecretStr

from arkq.link_calls import LinkCalls, MessageLike
from arkq.loop_bound import Close, Keeper, close_with_loop, release
from config_module import loader as _config_loader
from model_module.errors import (
    ModelError,
    bad_response,
    from_openai_error,
    stream_incomplete,
    unreached,
)
from model_module.events import Finish, StreamEvent
from model_module.http_stream import Endpoint, EventSink, StreamPool
from model_module.retry import RequestBudget, RetryPolicy
from model_module.sse import ChunkDecoder
from model_module.version import USER_AGENT as _USER_AGENT

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Events `stream` holds for a caller that has not taken them yet, beyond which it stops reading.
_STREAM_BUFFER = 256
#: An abort is a courtesy to the server: never let it hold up the caller for long.
_ABORT_TIMEOUT_S = 2.0


def _check_max_tokens(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"max_tokens must be a positive integer, got {value!r}")
    return value


def _check_temperature(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 2:
        raise ValueError(f"temperature must be a number from 0 to 2, got {value!r}")
    return float(value)


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _check_retries(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"max_retries must be a non-negative integer, got {value!r}")
    return value


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class ArkModelLink(LinkCalls):
    """A connection to one OpenAI-compatible chat model, with arkq's error and retry policy.

    Every argument left as None takes its value from `config.llm` when the link is built. Use it as
    `async with ArkModelLink() as llm:` or call `aclose()` when done, to release the connection pool
    at once; a link never closed has its pool closed when it is garbage-collected or its loop ends.
    """

    def __init__(
        self,
        model_name: str | None = None,
        base_url: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        *,
        api_key: str | SecretStr | None = None,
        connect_timeout_s: float | None = None,
        read_timeout_s: float | None = None,
        max_retries: int | None = None,
        backoff_base_s: float | None = None,
        backoff_max_s: float | None = None,
        max_retry_after_s: float | None = None,
    ) -> None:
        llm = _config_loader.config.llm
        self.model_name: str = _pick(model_name, llm.model_name)
        self.base_url: str = _pick(base_url, llm.base_url)
        self.max_tokens: int = _check_max_tokens(_pick(max_tokens, llm.max_tokens))
        self.temperature: float = _check_temperature(_pick(temperature, llm.temperature))
        key = _pick(api_key, llm.api_key)
        self._api_key: str | None = key.get_secret_value() if isinstance(key, SecretStr) else key
        self.connect_timeout_s = _check_seconds(
            "connect_timeout_s", _pick(connect_timeout_s, llm.connect_timeout_s)
        )
        self.read_timeout_s = _check_seconds("read_timeout_s", _pick(read_timeout_s, llm.read_timeout_s))
        self.max_retries: int = _check_retries(_pick(max_retries, llm.max_retries))
        self.backoff_base_s = _check_seconds("backoff_base_s", _pick(backoff_base_s, llm.backoff_base_s))
        self.backoff_max_s = _check_seconds("backoff_max_s", _pick(backoff_max_s, llm.backoff_max_s))
        self.max_retry_after_s = _check_seconds(
            "max_retry_after_s", _pick(max_retry_after_s, llm.max_retry_after_s)
        )
        if not self.model_name:
            raise ValueError("model_name must not be empty")
        if not self.base_url:
            raise ValueError("base_url must not be empty")
        self.retry_policy = RetryPolicy(
            self.max_retries, self.backoff_base_s, self.backoff_max_s, self.max_retry_after_s
        )
        self._endpoint = Endpoint.of(self.base_url)
        proxy = self._endpoint.proxy()
        if proxy is not None:
            logger.warning(
                "a proxy is set for %s (%s), but streamed calls connect to it directly; only the "
                "link's other calls go through the proxy",
                self.base_url,
                proxy,
            )
        self._stream_headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {self._api_key or '-'}",
            "User-Agent": _USER_AGENT,
        }
        self._client: AsyncOpenAI | None = None
        self._pool: StreamPool | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._keeper: Keeper | None = None
        # Loops in several threads may share the link. Unguarded, two could each make a client, and the
        # one whose client was overwritten would have it closed under it by its dropped keeper.
        self._client_lock = threading.Lock()
        #: The last request found no server to connect to (refused, unknown host): until one connects
        #: again, aborts are skipped, since they could not reach it either.
        self.server_unreached = False
        #: Told the outcome of every request the link sends for a generation, retries included: "ok",
        #: the failure's `ModelError.kind`, or "closed" when the caller stopped reading (worker metrics).
        self.on_request: Callable[[str], None] | None = None

    def __repr__(self) -> str:
        return (
            f"ArkModelLink(model_name={self.model_name!r}, base_url={self.base_url!r}, "
            f"max_tokens={self.max_tokens!r}, temperature={self.temperature!r})"
        )

    # -- client lifecycle -------------------------------------------------------------------------

    @property
    def client(self) -> AsyncOpenAI:
        """The link's `AsyncOpenAI`, created on first use and then reused with its connection pool.

        A pool's connections belong to the event loop that opened them, so a link used from a new loop
        (a second `asyncio.run`, one loop per test) gets a new client instead of a broken pool.
        """
        return self._opened()[0]

    @property
    def streams(self) -> StreamPool:
        """The connections that streamed calls use (`model_module.http_stream`), like `client` one set
        per event loop."""
        return self._opened()[1]

    def _opened(self) -> tuple[AsyncOpenAI, StreamPool]:
        loop = _running_loop()
        with self._client_lock:
            client, pool = self._client, self._pool
            if client is None or pool is None or (loop is not None and self._client_loop not in (None, loop)):
                release(self._keeper)  # the old client's loop may still be using it
                client, pool = self._new_client(), self._new_pool()
                self._client, self._pool, self._client_loop, self._keeper = client, pool, None, None
            if loop is not None and self._client_loop is None:
                self._client_loop = loop
                self._keeper = close_with_loop(_closer(client, pool))
            return client, pool

    def _new_pool(self) -> StreamPool:
        return StreamPool(
            self._endpoint, connect_timeout_s=self.connect_timeout_s, read_timeout_s=self.read_timeout_s
        )

    def _new_client(self) -> AsyncOpenAI:
        # `read` bounds the silence before the first token and between chunks, not the whole call.
        timeout = httpx2.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        return AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key or "-",  # SGLang without --api-key accepts anything
            max_retries=0,
            timeout=timeout,
            # The SDK's aiohttp transport: about half the CPU per streamed chunk of its default (anyio)
            # transport, which a worker relaying a GPU's output on one core needs (bench/RESULTS.md).
            http_client=DefaultAioHttpClient(timeout=timeout),
        )

    async def aclose(self) -> None:
        """Close the client and its connections. The link stays usable: a later call opens a new one."""
        with self._client_lock:
            client, pool = self._client, self._pool
            release(self._keeper)
            self._client, self._pool, self._client_loop, self._keeper = None, None, None, None
        if pool is not None:
            pool.close()
        if client is not None:
            await client.close()  # a no-op if its loop's shutdown has closed it

    # -- requests ---------------------------------------------------------------------------------

    def _params(
        self,
        messages: Sequence[MessageLike],
        json_schema: Mapping[str, Any] | None,
        *,
        max_tokens: int | None,
        temperature: float | None,
        model: str | None,
        rid: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.model_name if model is None else model,
            "messages": self._format_messages(messages),
            "max_tokens": self.max_tokens if max_tokens is None else _check_max_tokens(max_tokens),
            "temperature": self.temperature if temperature is None else _check_temperature(temperature),
        }
        if not params["model"]:
            raise ValueError("model must not be empty")
        if json_schema is not None:
            params["response_format"] = json_schema
        if tools:
            params["tools"] = list(tools)
        if sampling:
            params.update(sampling)
        body = dict(extra_body) if extra_body else {}
        if rid is not None:
            body["rid"] = rid  # SGLang's request id: lets the caller abort it with /abort_request
        if body:
            params["extra_body"] = body
        return params

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        budget = self.retry_policy.budget()
        while True:
            budget.sent += 1
            outcome = "closed"
            try:
                found = await call()
                outcome = "ok"
                return found
            except ModelError as error:
                outcome = error.kind
                delay = self._next_try(error, budget)
                if delay is None:
                    raise
            finally:
                if self.on_request is not None:
                    self.on_request(outcome)
            await asyncio.sleep(delay)

    def _next_try(self, error: ModelError, budget: RequestBudget) -> float | None:
        """After a request that failed before any output: count it against the budget, and say how long
        to wait before the next one, or None to give up (not retryable, or the budget is spent)."""
        budget.failed += 1
        delay = None if budget.spent else self.retry_policy.delay_for(error, budget.failed - 1)
        if delay is not None:
            logger.warning(
                "LLM call failed (%s); retry %d of %d in %.2f s",
                error,
                budget.failed,
                budget.limit - 1,
                delay,
            )
        return delay

    async def relay(
        self,
        messages: Sequence[MessageLike],
        json_schema: Mapping[str, Any] | None = None,
        *,
        sink: EventSink,
        max_tokens: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        rid: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        budget: RequestBudget | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> Finish:
        """Stream the model's answer into `sink`, each delta as it arrives; return how it finished.

        `sink` is called with every delta while the response is being read, before the next byte is, so
        a delta costs no task switch: a worker relays a GPU's output this way. It may return an
        awaitable, and reading waits until that is done; what it raises ends the call, as raised.

        Transient failures are retried only until the first delta has reached `sink`; after it, any
        failure raises `ModelError` at once, because the caller has already passed the partial answer
        on. Retries draw on `budget` (default: a fresh one, `max_retries` retries): a caller that
        starts over after a broken stream passes the same budget again, so that the requests failing
        before any output stay bounded for the whole job. Cancelling the call closes the HTTP stream
        (SGLang then aborts the request; send `rid` to be able to abort it explicitly too). `sampling`
        holds further OpenAI parameters (`top_p`, `stop`, `seed`, `tool_choice`, ...), sent as given.
        """
        params = self._params(
            messages,
            json_schema,
            max_tokens=max_tokens,
            temperature=temperature,
            model=model,
            rid=rid,
            tools=tools,
            extra_body=extra_body,
            sampling=sampling,
        )
        extra = params.pop("extra_body", None) or {}
        body = json.dumps({**params, **extra, "stream": True, "stream_options": {"include_usage": True}})
        payload = body.encode()
        if inspect.iscoroutinefunction(sink):
            raise TypeError(
                "sink must be a plain function, called as each delta is read; to push back, return an "
                "awaitable from it (reading waits until it is done)"
            )
        budget = self.retry_policy.budget() if budget is None else budget
        started = False

        def told(event: StreamEvent) -> Awaitable[None] | None:
            nonlocal started
            started = True
            return sink(event)

        while True:
            budget.sent += 1
            outcome = "closed"  # the caller stopped the call before the end
            try:
                finish = await self._relay_once(payload, told)
                outcome = "ok"
                return finish
            except ModelError as error:
                outcome = error.kind
                delay = None if started else self._next_try(error, budget)
                if delay is None:
                    raise
                if error.kind == "timeout" and rid is not None:
                    # The server may still hold the request we gave up on; the retry reuses its rid.
                    await self.abort(rid)
            finally:
                if self.on_request is not None:
                    self.on_request(outcome)
            await asyncio.sleep(delay)

    async def _relay_once(self, payload: bytes, sink: EventSink) -> Finish:
        decoder = ChunkDecoder()
        try:
            await self.streams.post_stream("/chat/completions", payload, self._stream_headers, decoder, sink)
        except ModelError as error:
            self.server_unreached = unreached(error)
            raise
        finally:
            if decoder.unknown:
                logger.warning(
                    "the LLM server at %s sent %d line(s) that are not SSE in one stream; skipped them. "
                    "The first: %r",
                    self.base_url,
                    decoder.unknown,
                    decoder.first_unknown,
                )
        self.server_unreached = False
        if not decoder.done:
            raise stream_incomplete("the server closed the stream without [DONE]")
        return Finish(decoder.finish_reason, decoder.usage)

    async def stream(
        self,
        messages: Sequence[MessageLike],
        json_schema: Mapping[str, Any] | None = None,
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        model: str | None = None,
        rid: str | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        budget: RequestBudget | None = None,
        sampling: Mapping[str, Any] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The model's answer as typed events, ending with exactly one `Finish`: `relay` as an
        iterator, with its retry policy (nothing is retried once a delta has been yielded). Closing the
        iterator early closes the HTTP stream."""
        buffered: list[StreamEvent] = []
        loop = asyncio.get_running_loop()
        arrived: asyncio.Future[None] = loop.create_future()
        room: asyncio.Future[None] | None = None

        def wake() -> None:
            if not arrived.done():
                arrived.set_result(None)

        def sink(event: StreamEvent) -> Awaitable[None] | None:
            nonlocal room
            buffered.append(event)
            wake()
            if len(buffered) < _STREAM_BUFFER:
                return None
            room = loop.create_future()  # the caller is behind: reading waits until it takes these
            return room

        call = asyncio.ensure_future(
            self.relay(
                messages,
                json_schema,
                sink=sink,
                max_tokens=max_tokens,
                temperature=temperature,
                model=model,
                rid=rid,
                tools=tools,
                extra_body=extra_body,
                budget=budget,
                sampling=sampling,
            )
        )
        call.add_done_callback(lambda _: wake())
        try:
            while True:
                await arrived
                arrived = loop.create_future()
                events = buffered[:]
                buffered.clear()
                if room is not None and not room.done():
                    room.set_result(None)
                for event in events:
                    yield event
                if call.done() and not buffered:
                    yield call.result()
                    return
        finally:
            if call.done():
                if not call.cancelled():
                    call.exception()  # retrieved: a failure the caller stopped reading before is no news
            else:
                call.cancel()
                try:
                    await call
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # the caller itself was cancelled meanwhile: that must not be lost
                except ModelError:
                    pass

    def _failed(self, exc: BaseException) -> ModelError:
        """The `ModelError` for a failed request; notes whether the server could not be reached."""
        self.server_unreached = unreached(exc)
        return from_openai_error(exc)

    async def abort(self, rid: str) -> bool:
        """Ask the server to stop generating request `rid` (SGLang's `POST /abort_request`).

        Closing the HTTP stream should abort the request, but SGLang does not always notice, and a
        forgotten request keeps a GPU slot busy until max_tokens. Best effort: False if it failed.
        Skipped (False, without a word) while the last request found no server to connect to: the
        request never reached one, and the abort would not either."""
        if self.server_unreached:
            logger.debug("abort of %s skipped: the LLM server at %s is unreachable", rid, self.base_url)
            return False
        root = self.base_url.rstrip("/").removesuffix("/v1")
        try:
            await self.client.post(
                f"{root}/abort_request",
                body={"rid": rid},
                cast_to=httpx2.Response,
                options={"timeout": _ABORT_TIMEOUT_S},
            )
        except (openai.APIError, httpx2.HTTPError) as error:
            logger.warning("abort of request %s failed: %s", rid, error)
            return False
        return True

    async def served_models(self) -> list[str]:
        """The names of the models the server serves (`GET {base_url}/models`, as SGLang, vLLM and
        OpenAI answer it): one request, not retried, for a check that the server answers to our key.
        Raises `ModelError`, classified as any call's failure."""
        try:
            response = await self.client.get("/models", cast_to=httpx2.Response)
            self.server_unreached = False
            body = await response.aread()
        except openai.NotFoundError as exc:  # no such path: llm.base_url is not where the API is
            self.server_unreached = False
            found = exc.response
            raise bad_response(
                str(found.request.url), 404, found.headers.get("content-type"), found.content, "a model list"
            ) from exc
        except (openai.APIError, httpx2.RequestError) as exc:
            raise self._failed(exc) from exc
        try:
            return [str(card["id"]) for card in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            raise bad_response(
                str(response.request.url),
                response.status_code,
                response.headers.get("content-type"),
                body,
                "a model list",
            ) from None

    async def generate_response(
        self, messages: Sequence[MessageLike], json_schema: Mapping[str, Any] | None = None
    ) -> str:
        """The model's whole answer, from one non-streamed call (retried like `stream`)."""
        params = self._params(messages, json_schema, max_tokens=None, temperature=None, model=None)
        return await self._retrying(lambda: self._complete_once(params))

    async def _complete_once(self, params: dict[str, Any]) -> str:
        # The raw body, decoded here: the SDK hands back a login page's HTML as a plain str instead of
        # failing, and it needs only one field of the completion.
        try:
            async with self.client.chat.completions.with_streaming_response.create(**params) as response:
                self.server_unreached = False
                body = await response.read()
                try:
                    completion = json.loads(body)
                except ValueError:
                    completion = None
                choices = completion.get("choices") if isinstance(completion, dict) else None
                if not isinstance(choices, list):
                    http = response.http_response
                    content_type = http.headers.get("content-type")
                    url = str(http.request.url)
                    raise bad_response(url, http.status_code, content_type, body, "a JSON chat completion")
        except (openai.APIError, httpx2.RequestError) as exc:
            raise self._failed(exc) from exc
        if not choices:
            raise ModelError("server_error", "the response has no choices")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        return content if isinstance(content, str) else ""


def _closer(client: AsyncOpenAI, pool: StreamPool) -> Close:
    """What the keeper runs when the loop ends first: close `client` and `pool` unless closed already."""

    async def close() -> None:
        pool.close()
        if not client.is_closed():
            await client.close()

    return close
