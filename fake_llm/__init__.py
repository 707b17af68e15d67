"""An SGLang-compatible OpenAI server emulator for development, tests and benchmarks.

It speaks SGLang's wire format (chunk shapes, ``null`` handling, error bodies and
messages, abort semantics) and answers with deterministic text derived from a hash of the
conversation, so no GPU is needed and results are reproducible.

Endpoints
---------
``GET /health``, ``GET /health_generate`` (200, empty body), ``GET /v1/models``,
``GET /v1/models/{model}``, ``GET /get_model_info`` (and ``/model_info``), ``GET /get_server_info``
(and ``/server_info``: ``served_model_name`` and the context length, what the SGLang router reads when it
registers a worker), ``POST /v1/chat/completions``
(streamed or not), ``POST /abort_request`` (``{"rid": ...}`` or ``{"abort_all": true}``;
unknown rids are a no-op 200), ``GET /metrics`` (SGLang's request metrics under SGLang's
names, as with ``--enable-metrics``, see :mod:`fake_llm.metrics`) and, emulator-only,
``GET /stats`` (live counters, see :class:`~fake_llm.stats.Stats`). With ``api_key`` set,
everything but ``/health*``, ``/metrics`` and ``/stats`` needs ``Authorization: Bearer <key>`` (else 401
``{"error": "Unauthorized"}``).

Generation
----------
Plain answers are 16..48 lorem-ipsum words (one word per token, fixed per conversation);
``max_tokens``/``max_completion_tokens`` caps them (``finish_reason: length``), ``stop``
strings end them early. ``response_format`` ``json_schema`` yields a JSON instance of the
schema and ``json_object`` any JSON object, streamed in small pieces (an unusable schema
fails like SGLang's grammar compiler: 400 "Invalid grammar request: ..." when not
streamed, an in-stream error event when streamed). With ``tools`` (and ``tool_choice``
not ``"none"``) the answer is one call to the first tool (or the named one) whose
arguments are an instance of its ``parameters`` schema, ``finish_reason: tool_calls``.
``usage.prompt_tokens`` is an estimate (words of all messages + 4 per message + 3).
With ``continue_final_message: true`` and a final assistant message, the answer goes on from
that message's text, as SGLang's does: when the text begins the conversation's own answer
(the answer planned without it), the rest of that answer is streamed, so an answer
interrupted and continued any number of times ends up the uninterrupted one; other text is
followed by other words. Only the new tokens are streamed and counted.

Pacing
------
Per request (``--pacing per-request``, the default): each request waits ``--ttft-ms`` for its first
token, then ``--itl-ms`` a token, on a timer of its own, however many requests run.

Batched (``--pacing batched``), as a GPU running SGLang paces them: one decode clock for the server.
Each decode step gives every running request its next token, and the chunks of one step are written
together; a step takes ``--step-ms`` + ``--step-ms-per-request`` x the running requests (defaults
15 + 0.05: 15 ms for one stream, 27.8 ms for 256, 40.6 ms for 512, like an 8B model on one H100). A new
request waits for the step in progress to end, then for a prefill of all the waiting requests,
``--prefill-ms`` + ``--prefill-ms-per-token`` x their prompt tokens (defaults 15 + 0.03), which holds
the running requests back, as SGLang runs a prefill batch instead of a decode step; its first token
comes out of the prefill, the next ones out of the steps it then joins. An abort takes the request out
at the end of the step in progress; a client that goes away without one leaves its request in the
batch until its answer is done, as with per-request pacing. A request with its own
``ttft_ms``/``itl_ms`` directive keeps its own timer, out of the batch. ``/stats`` reports ``pacing``,
``batch`` (the running requests), ``steps`` and ``prefills``; ``/metrics`` counts the requests waiting
for a prefill as queued.
:mod:`fake_llm.batching` says which parts of SGLang's scheduler this follows.

Fault directives
----------------
Any message may contain directives; their text is ignored for generation::

    directive := "[[arkq:" item (" " item)* "]]"
    item      := key "=" number

=====================  =====================================================================
``tokens=N``           exactly N content tokens (plain text only), before ``max_tokens``
``reasoning=N``        N ``reasoning_content`` tokens before the content (as with
                       ``--reasoning-parser``)
``ttft_ms=X``          delay before the first token, for this request (with batched pacing,
                       either key puts the request on its own timer, out of the batch)
``itl_ms=X``           delay between tokens, for this request
``stamp=1``            streamed only: each content token's text is the Unix time its chunk is
                       written (``f" {time.time():.6f}"``, taken after the pacing sleep; with
                       batched pacing the time of the step, the same for all its chunks), so a
                       client can measure per-token delivery latency as receive time minus
                       stamp; reasoning tokens, tool-call fragments and token counts are
                       unchanged; non-streamed answers ignore it
``status=CODE``        answer with HTTP CODE and SGLang's error body instead of generating
                       ("The request queue is full." for 503, "Injected fault" otherwise);
                       streamed requests too
``retry_after=S``      with ``status``: add ``Retry-After: S``
``context_overflow=1`` 400 "The input (N tokens) is longer than the model's context length
                       (M tokens)."
``stream_error=CODE``  after ``error_after`` tokens: the scheduler aborts with CODE; a stream
                       gets ``data: {"error": {...}}`` (then the usage chunk if asked, then
                       ``[DONE]``), a non-streamed request gets HTTP CODE
``error_after=K``      tokens delivered before ``stream_error`` fires (default 0)
``cut_after=K``        after K tokens drop the TCP connection (no finish chunk, no
                       ``[DONE]``)
``html=1``             answer HTTP 200 ``text/html`` with a sign-in page instead, streamed or
                       not: what a gateway (SSO proxy, captive portal) in front of the server
                       sends a client without its cookie
``flip_stream=1``      answer in the other mode than asked: a streamed request gets the
                       non-streamed ``application/json`` completion, a non-streamed one the
                       ``text/event-stream`` stream (a server or proxy that mishandles
                       ``stream``)
``refuse_continue=1``  answer a request with ``continue_final_message`` with a 400 "Unrecognized
                       request argument supplied: continue_final_message", as a server without
                       the parameter does
``times=N``            the fault keys (status, stream_error, cut_after, context_overflow,
                       html, flip_stream) only fire for the first N requests carrying the same
                       directive text; later ones succeed (shaping keys such as ``tokens``,
                       ``itl_ms``, ``stamp`` still apply)
=====================  =====================================================================

Token counts for ``error_after``/``cut_after`` include reasoning tokens and tool-call
fragments. Several directives combine; later values win. A malformed directive is a 400.
``status=404`` answers SGLang's error body with a 404; a path the server does not have
(``/chat/completions`` without ``/v1``, say) gets FastAPI's ``{"detail": "Not Found"}``,
as SGLang answers it, and counts in ``Stats.not_found``.
"""

from __future__ import annotations

from .app import create_app
from .batching import BatchingConfig
from .server import FakeLLMServer, run, running_fake_llm
from .stats import Stats

__all__ = ["BatchingConfig", "FakeLLMServer", "Stats", "create_app", "run", "running_fake_llm"]
