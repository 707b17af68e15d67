"""Batched pacing: one decode clock per server, as a GPU running SGLang paces its requests.

A real server does not give each request a timer of its own. Its scheduler runs one forward pass at a
time over every running request, so every running request gets its next token at the same instant, and
the outputs of one pass leave the server together; the pass takes longer as the batch grows, so every
stream slows down when more streams run. With ``--pacing batched`` the emulator does the same, and a
benchmark at 512 streams sees what the client side of a busy GPU sees: tokens in bursts, one burst per
step, the inter-token delay a function of the load.

What SGLang does, and what this clock takes from it (read in ``sgl-project/sglang``'s main branch,
``python/sglang/srt/managers/``: ``scheduler.py`` at 0003215, ``scheduler_output_processor_mixin.py``
at 004ec01, whose ``stream_output`` later moved to ``scheduler_components/output_streamer.py``, and
``tokenizer_manager.py`` at 001067f):

- ``scheduler.py``, ``Scheduler.event_loop_normal``: one loop per server (per GPU worker): receive the
  new requests, ``get_next_batch_to_run``, ``run_batch``, ``process_batch_result``; when there is no
  batch, wait. The emulator's loop is :meth:`DecodeClock._loop`.
- ``scheduler.py``, ``Scheduler.get_next_batch_to_run``: the previous prefill batch is merged into the
  running batch first; then a new prefill batch is made of the waiting requests
  (``get_new_batch_prefill``) and, if there is one, it runs *instead of* a decode step ("Run prefill
  first if possible"); otherwise the running batch decodes one step (``update_running_batch``). So a
  prefill delays the running requests' next token by the prefill's time, and a request that arrives
  while a step runs waits for the end of that step. The emulator does the same: the waiting requests
  form one prefill batch, which takes ``prefill_ms + prefill_ms_per_token * prompt tokens`` and holds
  the decode steps back for that long (mixed chunked prefill, ``--enable-mixed-chunk``, is not modelled).
- ``scheduler_output_processor_mixin.py``, ``process_batch_result_prefill``: the prefill's result
  appends each request's first output token and calls ``stream_output``: the first token (and with it
  the role chunk) leaves at the end of the prefill, before the request's first decode step.
- ``scheduler_output_processor_mixin.py``, ``process_batch_result_decode`` then ``stream_output`` /
  ``stream_output_generation``: after a decode step every request of the batch gets one token, its
  finish is checked, and *one* ``BatchTokenIDOutput`` with the outputs of all the batch's streaming
  requests goes to the detokenizer (with the default ``stream_interval`` of 1 every streaming request
  has an output at every step; a finished one always has). The emulator writes the chunks of one step
  in one pass over the batch, and a ``stamp`` token carries the step's time, the same for every chunk
  of the step.
- ``tokenizer_manager.py``, ``TokenizerManager.handle_loop`` / ``_handle_batch_output``: the batch
  output is handed out in one loop over its rids (``state.out_list.append``, then ``state.event.set()``
  for ``batch_notify_size`` requests at a time), and each request's HTTP stream
  (``_wait_one_response``) writes what it was given; nothing waits for a slow reader, whose outputs pile
  up in its ``out_list``. Here, a reader that does not read has its chunks pile up in its
  socket's buffer: the clock never waits for one stream.
- ``scheduler.py``, ``Scheduler.abort_request``: a waiting request is taken out of the queue when the
  loop next receives requests; a running one is marked (``req.to_finish = FINISH_ABORT()``) and finishes
  when the next step's result is processed. Here an aborted request leaves at the end of the step (or
  prefill) during which the abort came, with ``finish_reason: abort``. A client that goes away without
  an abort leaves its request in the batch, unwritten, until its answer is done or it is aborted, as
  with per-request pacing (and as reported of SGLang): it keeps its share of every step's time.

The step time: ``step_ms + step_ms_per_request * batch``. The defaults, 15 ms + 0.05 ms a request
(15 ms at batch 1, 27.8 ms at 256, 40.6 ms at 512), are the curve of an 8B model on one H100 as seen
from the client: about 15 ms a token for a lone stream, and a step at 256 streams less than twice as
long. That is 9,200 tokens/s at 256 streams and 12,600 at 512, inside the 5,000 to 16,000 tokens/s
published for 8B-class models on one H100 at saturation. (The bare forward pass at batch 1 is faster,
about 5 ms to read 16 GB of weights at 3.35 TB/s; the default leaves room for what a real deployment
adds around it.) The prefill: ``prefill_ms + prefill_ms_per_token * the prompt tokens of the batch``,
by default 15 ms (one forward pass, as a decode step) plus 0.03 ms a prompt token (about 33,000 prompt
tokens/s: an 8B model's ~16 GFLOP a token at half of an H100's dense bf16 rate), so a short chat prompt
costs about one step.

Not modelled: ``max_running_requests`` and the KV-cache limit (every request is admitted at once),
retraction, chunked prefill and ``max_prefill_tokens`` (one prefill batch takes every waiting request),
``stream_interval`` above 1, speculative decoding, several data-parallel workers.

Cost: a step is one pass over the running requests (a few attribute reads, one pre-rendered chunk
written straight to each socket); the loop has one timer for the whole server instead of one per
request and token. Measured with 512 streams of 200 tokens on a 2-core machine: about 11.5 us of the
emulator's CPU a token, two thirds of it the socket send itself, against about 25 us with per-request
pacing at the same pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from .registry import ActiveRequest
from .stats import Stats

__all__ = ["BatchingConfig", "DecodeClock", "Slot", "describe"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BatchingConfig:
    """The decode clock's timing (milliseconds); the defaults resemble an 8B model on one H100 (see the
    module docstring for the numbers and why)."""

    step_ms: float = 15.0  # fixed part of a decode step
    step_ms_per_request: float = 0.05  # and what each running request adds to it
    prefill_ms: float = 15.0  # fixed part of a prefill batch
    prefill_ms_per_token: float = 0.03  # and what each prompt token of the batch adds to it

    def __post_init__(self) -> None:
        for name in ("step_ms", "step_ms_per_request", "prefill_ms", "prefill_ms_per_token"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    def step_seconds(self, batch: int) -> float:
        """How long one decode step over ``batch`` running requests takes."""
        return (self.step_ms + self.step_ms_per_request * batch) / 1000

    def prefill_seconds(self, prompt_tokens: int) -> float:
        """How long a prefill batch of ``prompt_tokens`` prompt tokens in all takes."""
        return (self.prefill_ms + self.prefill_ms_per_token * prompt_tokens) / 1000


def describe(config: BatchingConfig) -> str:
    """The curve in words, for the start-up line."""
    return (
        f"(decode step {config.step_ms:g} ms + {config.step_ms_per_request:g} ms a running request, "
        f"prefill {config.prefill_ms:g} ms + {config.prefill_ms_per_token:g} ms a prompt token)"
    )


class Slot:
    """One request's place in the batch: how many tokens it will get, how many it got, and what to do
    with each (``emit``, called with the step's ``time.time()``; None for a request that is not
    streamed, which only counts them). ``done`` resolves when the request leaves the batch: all its
    tokens out, aborted, or ``drop()``-ed by its handler."""

    __slots__ = ("active", "done", "dropped", "emit", "prompt_tokens", "sent", "target")

    def __init__(
        self,
        active: ActiveRequest,
        target: int,
        prompt_tokens: int,
        emit: Callable[[float], None] | None,
    ) -> None:
        self.active = active
        self.target = target  # tokens to deliver, > 0
        self.prompt_tokens = prompt_tokens
        self.emit = emit
        self.sent = 0
        self.dropped = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def drop(self) -> None:
        """The handler has gone (cancelled): leave the batch at the end of the step, no more emits."""
        self.dropped = True
        self.emit = None


def _leave(slot: Slot) -> None:
    if not slot.done.done():
        slot.done.set_result(None)


class DecodeClock:
    """The server's one decode loop (see the module docstring). :meth:`join` a :class:`Slot`, await its
    ``done``; :meth:`close` stops the loop. The loop starts with the first request and sleeps while there
    is nothing to run."""

    def __init__(self, config: BatchingConfig, stats: Stats) -> None:
        self.config = config
        self.stats = stats
        self._waiting: list[Slot] = []
        self._prefilling: list[Slot] = []  # the prefill batch in progress
        self._running: list[Slot] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Requests waiting for their prefill (SGLang's ``num_queue_reqs``)."""
        return len(self._waiting)

    def join(self, slot: Slot) -> None:
        """Queue ``slot`` for the next prefill batch."""
        self._waiting.append(slot)
        self._wake.set()
        if self._task is None or self._task.done():  # not started yet, or stopped by a failure
            self._task = asyncio.get_running_loop().create_task(self._run(), name="fake-llm decode clock")

    async def close(self) -> None:
        """Stop the loop; requests still in it are let go (their handlers end as aborted)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._let_go()

    def _let_go(self) -> None:
        for slot in (*self._waiting, *self._prefilling, *self._running):
            slot.active.abort()
            _leave(slot)
        self._waiting, self._prefilling, self._running = [], [], []
        self.stats.batch = 0

    async def _run(self) -> None:
        try:
            await self._loop()
        except Exception:  # a bug: the requests in the batch end (as aborted) rather than hang
            logger.exception("the decode clock failed: its requests end as aborted, the next one restarts it")
            self._let_go()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        config, stats = self.config, self.stats
        due = loop.time()  # when the pass in progress ends: the clock keeps to it, as per-request pacing does
        while True:
            if not self._waiting and not self._running:
                stats.batch = 0
                self._wake.clear()
                await self._wake.wait()
                due = loop.time()
            # get_next_batch_to_run: a prefill batch of the waiting requests first, if there are any
            # that were not aborted while they waited.
            prefill = self._prefilling = [slot for slot in self._waiting if not _gone(slot)]
            for slot in self._waiting:
                if _gone(slot):
                    _leave(slot)
            self._waiting = []
            if prefill:
                seconds = config.prefill_seconds(sum(slot.prompt_tokens for slot in prefill))
                stats.prefills += 1
                due = await _sleep_until(loop, due, seconds)
                self._running.extend(self._pass(prefill))
                self._prefilling = []
            elif self._running:
                due = await _sleep_until(loop, due, config.step_seconds(len(self._running)))
                stats.steps += 1
                self._running = self._pass(self._running)
            stats.batch = len(self._running)

    def _pass(self, slots: list[Slot]) -> list[Slot]:
        """The end of a forward pass over ``slots``: each gets its next token, all with the same time
        stamp, and those that are done leave. Returns the ones that stay."""
        stamp = time.time()
        staying: list[Slot] = []
        for slot in slots:
            if _gone(slot):
                _leave(slot)
                continue
            emit = slot.emit
            if emit is not None:
                emit(stamp)
            slot.sent += 1
            if slot.sent >= slot.target:
                _leave(slot)
            else:
                staying.append(slot)
        return staying


def _gone(slot: Slot) -> bool:
    return slot.active.aborted or slot.dropped


async def _sleep_until(loop: asyncio.AbstractEventLoop, due: float, seconds: float) -> float:
    """Sleep until the pass that began at ``due`` (the end of the previous one) has taken ``seconds``;
    returns when it ends. A late wake-up shortens the next pass, as a GPU's steps keep their pace, but
    the clock owes at most one pass: an emulator that fell behind (a busy machine) does not then run
    steps back to back to catch up."""
    now = loop.time()
    end = max(due, now - seconds) + seconds
    if end > now:
        await asyncio.sleep(end - now)
    return end
