"""The generation job: one request through ArkModelLink's typed stream, every delta published.

One arq job may take several attempts: another worker takes over when the first dies or is stopped
(its lease lapses), and a stream that fails mid-way is tried again. Each attempt opens with `started`.
An attempt after one that published output continues that output where sound (`Continuation`: the
answer so far goes back to the server as the final assistant message to continue), so readers never
take text back; otherwise a `reset` voids the output first and the attempt starts over. Whatever
happens, the job ends with exactly one terminal event (`done`, `error` or `cancelled`), written after
its stored result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from arq.worker import Retry, RetryJob
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from arkq.backoff import Backoff
from arkq.contract import (
    CancelledEvent,
    DoneEvent,
    ErrorEvent,
    ErrorInfo,
    GenerationRequest,
    JobResult,
    JobStatus,
    ResetEvent,
    StartedEvent,
    Timings,
    ToolCallEvent,
    describe_validation_error,
)
from arkq.errors import JobEnds, LeaseLost, ModelError
from arkq.lease import Lease, LeaseKeeper, Stop
from arkq.logs import JobLogContext, job_context
from arkq.metrics import REDIS_ERRORS
from arkq.status import Failure, record_failure
from config_module.settings import ArkConfig
from model_module import ArkModelLink, Finish, ReasoningDelta, StreamEvent, TextDelta, ToolCallDelta
from model_module.retry import RequestBudget
from worker.metrics import JobMetrics
from worker.publisher import EventPublisher
from worker.stats import WorkerStats

logger = logging.getLogger("arkq.worker")


#: The `JobEnds` kind of a job cancelled before this attempt began: it ends `cancelled`, not in error.
CANCELLED = "cancelled"


def parse_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> GenerationRequest:
    if "undecodable" in kwargs:
        reason = str(kwargs["undecodable"]).encode("utf-8", "replace").decode("utf-8")
        raise JobEnds("invalid_job", reason)
    if len(args) != 1 or kwargs:
        raise JobEnds("invalid_job", "a job takes exactly one argument, the GenerationRequest object")
    try:
        return GenerationRequest.model_validate(args[0])
    except ValidationError as error:
        raise JobEnds(
            "invalid_job", f"invalid generation request: {describe_validation_error(error)}"
        ) from None


#: What a server answers when it will not continue a final assistant message: a strict OpenAI-style
#: server refusing the unknown parameter, or a prefix that no longer fits the context.
CONTINUATION_REFUSED = frozenset({"bad_request", "context_overflow"})


@dataclass(frozen=True, slots=True)
class Continuation:
    """The answer published so far, which the next attempt carries on from.

    `tokens` counts its token events: SGLang streams one token per chunk (its default stream_interval
    of 1), so they are what the answer has used of `max_tokens`."""

    text: str
    tokens: int

    def whole(self, finish: Finish) -> Finish:
        """The continuation's finish for the whole answer: its usage as an uninterrupted request's would
        be, the tokens continued from counted as completion tokens rather than prompt tokens."""
        if finish.usage is None:
            return finish
        usage = dict(finish.usage)
        if isinstance(usage.get("completion_tokens"), int):
            usage["completion_tokens"] += self.tokens
        if isinstance(usage.get("prompt_tokens"), int):
            usage["prompt_tokens"] = max(0, usage["prompt_tokens"] - self.tokens)
        return Finish(finish.reason, usage)


@dataclass
class Output:
    """What one attempt produced, for `done`, the stored result and timings."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    first_token_at: float | None = None

    def add_tool_call(self, delta: ToolCallDelta) -> None:
        call = self.tool_calls.setdefault(
            delta.index, {"id": None, "type": "function", "function": {"name": None, "arguments": ""}}
        )
        if delta.id:
            call["id"] = delta.id
        if delta.name:
            call["function"]["name"] = delta.name
        call["function"]["arguments"] += delta.arguments

    def fill(self, result: JobResult) -> None:
        result.text = "".join(self.text)
        result.reasoning = "".join(self.reasoning)
        result.tool_calls = [self.tool_calls[index] for index in sorted(self.tool_calls)]
        result.timings.first_token_at = self.first_token_at


async def generate(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, str]:
    """arq entry point: take the job's lease, run it, and end it with one terminal event."""
    leases: LeaseKeeper = ctx["leases"]
    job_id: str = ctx["job_id"]
    job_context.set(JobLogContext(job_id, ctx["worker_name"]))
    try:
        lease = await leases.acquire(job_id)
    except RedisError as error:
        REDIS_ERRORS.inc()
        raise RetryJob() from error  # Redis is away: leave the job queued for a later attempt
    if lease is None:
        # Another attempt holds the lease: it is alive (arq let go of its claim on the way). Look
        # again once that lease could have lapsed.
        raise Retry(defer=ctx["config"].worker.lease_s)
    async with leases.holding(lease):
        try:
            return await _run(ctx, lease, args, kwargs)
        except RedisError as error:
            # Redis stayed away longer than redis.retry_s. Whatever this attempt got done, the job
            # must not be dropped: arq puts it back in the queue (its lease lapses if Redis is still
            # down), and the next attempt starts over.
            REDIS_ERRORS.inc()
            logger.warning("job %s: Redis failed (%s); putting the job back", job_id, error)
            raise RetryJob() from error


async def _run(
    ctx: dict[str, Any], lease: Lease, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, str]:
    """One attempt under the lease: open the log, run the work, end the job (or hand it back)."""
    config: ArkConfig = ctx["config"]
    publisher = EventPublisher.open(
        ctx["redis"],
        lease,
        channel_prefix=config.streaming.channel_prefix,
        log_ttl_s=config.streaming.replay_ttl_s,
    )
    if publisher.ended:
        # It ended in an attempt whose worker died before arq recorded the end: nothing to add.
        return {"status": "ended before"}
    job = GenerationJob(ctx, publisher, args, kwargs, cancelled=lease.cancelled)
    if publisher.attempts:  # an attempt began before and never ended: this one takes the job over
        job.metrics.takeover()
    stats: WorkerStats = ctx["stats"]
    stats.running += 1
    try:
        lease.work = asyncio.create_task(job.run())
        try:
            result = await lease.work
            await job.finish(result)
        except (asyncio.CancelledError, LeaseLost) as error:
            return await _stopped(ctx, job, lease, error)
        return {"status": result.status}
    finally:
        stats.running -= 1


async def _stopped(
    ctx: dict[str, Any], job: GenerationJob, lease: Lease, error: BaseException
) -> dict[str, str]:
    """The work stopped early: cancelled by its caller, its lease lost, or the worker shutting down."""
    link: ArkModelLink = ctx["link"]
    current = asyncio.current_task()
    shutting_down = current is not None and current.cancelling() > 0
    # The stream is closed already; tell the server too, so the GPU slot is freed at once.
    await asyncio.shield(link.abort(job.rid))
    if shutting_down:
        raise error  # arq puts the job back in the queue for another worker
    if lease.stop is Stop.CANCELLED and not isinstance(error, LeaseLost):
        try:
            await job.finish(job.new_result("cancelled"))
        except LeaseLost:
            pass  # the job is another attempt's now: that attempt ends it (it sees the cancel too)
        else:
            return {"status": "cancelled"}
    # The lease is another attempt's now (this worker froze, or Redis lost it): back to the queue,
    # deferred until that attempt's lease could have lapsed, so it is not claimed again meanwhile.
    raise Retry(defer=ctx["config"].worker.lease_s)


class GenerationJob:
    """The attempts of one job on this worker, from its checks to its stored result."""

    def __init__(
        self,
        ctx: dict[str, Any],
        publisher: EventPublisher,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        cancelled: bool = False,
    ):
        self.config: ArkConfig = ctx["config"]
        self.redis: Redis = ctx["redis"]
        self.link: ArkModelLink = ctx["link"]
        self.worker_name: str = ctx["worker_name"]
        self.stats: WorkerStats = ctx["stats"]
        self.metrics: JobMetrics = ctx["metrics"]
        self.enqueued_at: float = ctx["enqueue_time"].timestamp()
        self.publisher = publisher
        #: No attempt published output before this one: the job's time to first token is ours to tell.
        self.first_token_due = not publisher.produced_before
        self.args, self.kwargs = args, kwargs
        self.started_at = time.time()
        self.output = Output()
        #: Why the server would not continue an answer, once it has refused: later attempts start over.
        self.refused: str | None = None
        #: A cancel had been asked for when this attempt took the job's lease.
        self.cancelled = cancelled

    def failed(self, error: ErrorInfo) -> JobResult:
        result = self.new_result("error")
        result.error = error
        return result

    def new_result(self, status: JobStatus) -> JobResult:
        result = JobResult(
            job_id=self.publisher.job_id,
            status=status,
            attempts=self.publisher.attempts,
            timings=Timings(
                enqueued_at=self.enqueued_at, started_at=self.started_at, finished_at=time.time()
            ),
        )
        self.output.fill(result)
        return result

    async def run(self) -> JobResult:
        """Attempt the job until it is done or cannot be. A lost lease, a Redis that stays down and
        cancellation from outside escape; anything else ends the job with a result."""
        try:
            async with asyncio.timeout(self.config.worker.job_timeout_s):
                request = await self._admit()
                finish = await self._attempts(request)
        except JobEnds as ended:
            if ended.kind != CANCELLED:
                return self.failed(
                    ErrorInfo(
                        kind=ended.kind,
                        message=ended.message,
                        retryable=ended.retryable,
                        retry_after=ended.retry_after,
                    )
                )
            if self.publisher.attempts:  # an earlier attempt's worker died; its request may run on
                await self.link.abort(self.rid)
            return self.new_result("cancelled")
        except TimeoutError:
            await self.link.abort(self.rid)
            limit = self.config.worker.job_timeout_s
            return self.failed(
                ErrorInfo(kind="timeout", message=f"job ran past worker.job_timeout_s={limit}")
            )
        except (LeaseLost, RedisError):
            raise
        except Exception as error:  # a bug must fail this job, never the worker
            logger.exception("job %s failed unexpectedly", self.publisher.job_id)
            return self.failed(ErrorInfo(kind="internal", message=f"{type(error).__name__}: {error}"))
        result = self.new_result("done")
        result.finish_reason, result.usage = finish.reason, finish.usage
        result.parsed = _parse_json(result.text) if request.json_schema or request.json_object else None
        return result

    async def _admit(self) -> GenerationRequest:
        """The checks before any attempt: cancelled, expired, malformed."""
        if self.cancelled:
            raise JobEnds(CANCELLED, "cancelled before this attempt began")
        expiry = self.config.queue.job_expiry_s
        if self.publisher.attempts == 0 and self.started_at - self.enqueued_at > expiry:
            waited = self.started_at - self.enqueued_at
            raise JobEnds("expired", f"queued {waited:.0f} s, past queue.job_expiry_s={expiry}: not run")
        if self.publisher.attempts == 0:
            queue_time_s = max(0.0, self.started_at - self.enqueued_at)
            self.stats.job_started(queue_time_s)
            self.metrics.started(queue_time_s)
        return parse_payload(self.args, self.kwargs)

    def _check_tries(self, last_error: ModelError | None) -> None:
        """The one place that enforces `worker.max_tries`, whatever ended the attempts before: a worker
        that died or was stopped (counted from the log's `started` events), or a stream that failed."""
        limit = self.config.worker.max_tries
        if self.publisher.attempts < limit:
            return
        if last_error is None:
            raise JobEnds("max_tries", f"gave up after {limit} attempts (worker.max_tries)")
        raise JobEnds.of(last_error, f"{last_error} (after {self.publisher.attempts} attempts)")

    async def _attempts(self, request: GenerationRequest) -> Finish:
        """Attempts on this worker. The link retries whatever fails before any output, within the job's
        request budget; a new attempt starts only when output was lost (the stream broke or failed
        after it began). A job whose server keeps refusing ends with the last error and its count of
        requests, without a new attempt: each attempt would send the server that many again."""
        llm = self.config.llm
        backoff = Backoff(llm.backoff_base_s, llm.backoff_max_s)
        budget = self.link.retry_policy.budget()
        last_error: ModelError | None = None
        restarts = 0
        while True:
            if self.publisher.attempts:
                # The attempt before this one (another worker's, maybe) may still be generating; even a
                # job about to give up frees its slot.
                await self.link.abort(self.rid)
            self._check_tries(last_error)
            if last_error is not None:
                delay = backoff.delay(restarts, last_error.retry_after)
                logger.warning("job %s: %s; restarting in %.2f s", self.publisher.job_id, last_error, delay)
                await asyncio.sleep(delay)
                restarts += 1
            # Not waited for: they are written before anything the attempt streams, and a failure to
            # write them surfaces at the attempt's next event.
            attempt = self.publisher.attempts + 1
            going_on: Continuation | None = None
            if self.publisher.dirty:
                plan = self._carry_on(request)
                if isinstance(plan, Continuation):
                    going_on = plan
                    logger.info(
                        "job %s: attempt %d continues %d published tokens",
                        self.publisher.job_id,
                        attempt,
                        plan.tokens,
                    )
                else:
                    await self._start_over(attempt, plan)
            await self.publisher.emit(
                StartedEvent, attempt=attempt, worker=self.worker_name, continues=going_on is not None
            )
            self.metrics.attempt("first" if attempt == 1 else "continued" if going_on else "restarted")
            log_context = job_context.get()
            if log_context is not None:
                log_context.attempt = attempt
            self.output = Output(text=[going_on.text] if going_on is not None else [])
            try:
                return await self._stream(request, budget, going_on)
            except ModelError as error:
                failure = error
            if (
                going_on is not None
                and self.output.first_token_at is None
                and failure.kind in CONTINUATION_REFUSED
            ):
                # Not the job's fault: the server will not continue it. The same attempt starts over
                # (a refusal costs the job no try, and the request is given back to its budget).
                self.refused = str(failure)
                budget.failed = max(0, budget.failed - 1)
                await self._start_over(attempt, f"the server refused to continue it ({failure})")
                self.output = Output()
                try:
                    return await self._stream(request, budget, None)
                except ModelError as error:
                    failure = error
            if not failure.retryable:
                raise JobEnds.of(failure) from failure
            if self.output.first_token_at is None:  # nothing streamed: the link spent the budget
                raise JobEnds.of(failure, f"{failure} (after {budget.sent} requests)") from failure
            last_error = failure

    async def _start_over(self, attempt: int, why: str) -> None:
        """Void the output published so far (`reset`), saying why it is not continued."""
        logger.warning("job %s: attempt %d starts over: %s", self.publisher.job_id, attempt, why)
        await self.publisher.emit(ResetEvent, reason=f"attempt {attempt} starts over: {why}")

    def _carry_on(self, request: GenerationRequest) -> Continuation | str:
        """How the next attempt goes on from the output published so far: the `Continuation`, or why it
        cannot (it then starts over after a `reset`)."""
        if not self.config.worker.resume_partial:
            return "worker.resume_partial is off"
        if request.json_schema is not None or request.json_object:
            return "a schema-constrained answer cannot be continued from its text (its grammar state is gone)"
        if "tool_call" in self.publisher.output_types:
            return "it stopped in a tool call"
        if "reasoning" in self.publisher.output_types:
            return "it streamed reasoning, which is not sent back to be continued"
        if self.refused is not None:
            return f"the server refused to continue it ({self.refused})"
        return Continuation("".join(self.publisher.answer), len(self.publisher.answer))

    @property
    def rid(self) -> str:
        """SGLang's request ID for this attempt: the job ID and the attempt number, so that aborting one
        attempt (a stalled worker's, say) never aborts another's."""
        return f"{self.publisher.job_id}-{self.publisher.attempts}"

    async def _stream(
        self, request: GenerationRequest, budget: RequestBudget, going_on: Continuation | None
    ) -> Finish:
        publisher, output = self.publisher, self.output
        messages: list[Any] = list(request.messages)
        max_tokens, extra_body = request.max_tokens, None
        if going_on is not None:
            # SGLang's ChatCompletionRequest.continue_final_message: OpenAIServingChat's
            # _handle_last_assistant_message takes the final assistant message's text out of the
            # conversation and appends it to the rendered prompt, after the generation prompt, so the
            # model goes on from it and streams only what follows (sglang, python/sglang/srt/
            # entrypoints/openai/serving_chat.py). Without the flag it would become a user turn.
            messages.append({"role": "assistant", "content": going_on.text})
            max_tokens = (self.link.max_tokens if max_tokens is None else max_tokens) - going_on.tokens
            if max_tokens <= 0:
                return Finish(reason="length", usage=None)  # the answer had used all of max_tokens
            extra_body = {"continue_final_message": True}
        stats = self.stats

        def relay(delta: StreamEvent) -> Awaitable[None] | None:
            """Each delta, told as the link reads it: kept for the result and queued for publishing."""
            if output.first_token_at is None:
                self._first_output()
            if type(delta) is TextDelta:
                output.text.append(delta.text)
                stats.tokens += 1
                return publisher.put_text("token", delta.text)
            if type(delta) is ReasoningDelta:
                output.reasoning.append(delta.text)
                stats.tokens += 1
                return publisher.put_text("reasoning", delta.text)
            if type(delta) is ToolCallDelta:
                output.add_tool_call(delta)
                return publisher.put(
                    ToolCallEvent, index=delta.index, id=delta.id, name=delta.name, arguments=delta.arguments
                )
            return None

        # Cancelling the job (or losing its lease) cancels the call, which closes its HTTP stream.
        finish = await self.link.relay(
            messages,
            request.json_schema,
            sink=relay,
            max_tokens=max_tokens,
            temperature=request.temperature,
            model=request.model,
            rid=self.rid,
            tools=request.tools,
            extra_body=extra_body,
            budget=budget,
            sampling=request.sampling(),
        )
        self._finished_stream(len(output.text) - (going_on is not None) + len(output.reasoning))
        return finish if going_on is None else going_on.whole(finish)

    def _first_output(self) -> None:
        self.output.first_token_at = now = time.time()
        if self.first_token_due:
            self.first_token_due = False
            self.metrics.first_token(max(0.0, now - self.enqueued_at))

    def _finished_stream(self, tokens: int) -> None:
        """The attempt's stream ended: its mean gap between tokens, for the metrics."""
        first = self.output.first_token_at
        if first is not None and tokens >= 2:
            self.metrics.token_gap((time.time() - first) / (tokens - 1))

    async def finish(self, result: JobResult) -> None:
        """Store the result and publish the one terminal event, together."""
        end, keep = self.publisher.end, self.config.worker.keep_result_s
        if result.status == "done":
            await end(
                result,
                DoneEvent,
                keep,
                finish_reason=result.finish_reason,
                usage=result.usage,
                text=result.text,
            )
        elif result.status == "cancelled":
            await end(result, CancelledEvent, keep)
        else:
            assert result.error is not None
            await end(result, ErrorEvent, keep, **result.error.model_dump())
        self.stats.jobs_ended += 1
        self.metrics.ended(result)
        self._log_end(result)
        if result.error is not None:
            await self._record_failure(result.error)

    def _log_end(self, result: JobResult) -> None:
        """The job's end, in one line with its durations (as its result's `timings` names them)."""
        timings = result.timings
        durations = {
            name: round(value, 4)
            for name, value in (
                ("queued_s", timings.queued_s),
                ("ttft_s", timings.ttft_s),
                ("total_s", timings.total_s),
            )
            if value is not None
        }
        logger.info(
            "job %s %s after %.2f s (%d attempt%s)%s",
            result.job_id,
            result.status,
            timings.total_s,
            result.attempts,
            "" if result.attempts == 1 else "s",
            f": {result.error.kind}: {result.error.message}" if result.error is not None else "",
            extra={
                "event": "job_ended",
                "status": result.status,
                "kind": result.error.kind if result.error is not None else None,
                "attempts": result.attempts,
                "finish_reason": result.finish_reason,
                **durations,
            },
        )

    async def _record_failure(self, error: ErrorInfo) -> None:
        """Add the failure to the fleet's list of latest failures (`arkq status`); the job has ended
        already, so a Redis that fails here costs the list an entry, nothing more."""
        failure = Failure(
            job_id=self.publisher.job_id,
            kind=error.kind,
            message=error.message,
            at=time.time(),
            worker=self.worker_name,
        )
        try:
            await record_failure(self.redis, self.config.queue.name, failure)
        except RedisError as failed:
            REDIS_ERRORS.inc()
            logger.warning("job %s: not added to the failure list: %s", failure.job_id, failed)


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None  # e.g. cut by max_tokens: the text is still the result
