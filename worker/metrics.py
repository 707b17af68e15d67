"""A worker's Prometheus metrics, served on `worker.metrics_port` (off when it is unset).

Names and the `model_name` label follow SGLang's (`sglang:queue_time_seconds` → `arkq_queue_time_seconds`)
so that each of arkq's figures sits beside SGLang's on one dashboard: `arkq_queue_time_seconds` is the
time in arkq's queue, `sglang:queue_time_seconds` the time in SGLang's.

The cost stays off the token path: a token is one integer added (`WorkerStats.tokens`, which the
token counter reads when scraped); histograms are observed once per job. The inter-token latency is a
job's mean gap (from its first token to its finish, over its tokens), observed once per job: SGLang
observes each gap, which would cost a histogram update per token here.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from arkq.contract import JobResult
from arkq.errors import ConfigError
from arkq.metrics import JOB_BUCKETS, TOKEN_GAP_BUCKETS, WAIT_BUCKETS
from worker.stats import WorkerStats

QUEUE_TIME = Histogram(
    "arkq_queue_time_seconds",
    "From enqueue until the job's first attempt starts on a worker.",
    ["model_name"],
    buckets=WAIT_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "arkq_time_to_first_token_seconds",
    "From enqueue until the job's first output token is published.",
    ["model_name"],
    buckets=WAIT_BUCKETS,
)
INTER_TOKEN_LATENCY = Histogram(
    "arkq_inter_token_latency_seconds",
    "A job's mean gap between output tokens (one observation per attempt that streamed two or more).",
    ["model_name"],
    buckets=TOKEN_GAP_BUCKETS,
)
E2E_LATENCY = Histogram(
    "arkq_e2e_request_latency_seconds",
    "From enqueue until the job ended on a worker, whatever the outcome.",
    ["model_name"],
    buckets=JOB_BUCKETS,
)
PROMPT_TOKENS = Counter(
    "arkq_prompt_tokens", "Prompt tokens of the jobs done, as the LLM server counted them.", ["model_name"]
)
JOBS = Counter(
    "arkq_jobs",
    "Jobs ended on a worker, by outcome (done, error, cancelled) and, for errors, kind.",
    ["model_name", "outcome", "kind"],
)
ATTEMPTS = Counter(
    "arkq_attempts",
    "Attempts started: a job's first, one that continues a broken stream, one that starts it over.",
    ["model_name", "reason"],
)
LEASE_TAKEOVERS = Counter(
    "arkq_lease_takeovers",
    "Jobs taken over from an attempt that did not end (its worker died, stopped, or lost the lease).",
    ["model_name"],
)
LLM_REQUESTS = Counter(
    "arkq_llm_requests",
    'Requests sent to the LLM server, by outcome: "ok", a failure\'s kind, or "closed" (stopped early).',
    ["model_name", "status"],
)
RUNNING_JOBS = Gauge("arkq_worker_running_jobs", "Jobs this worker process runs now.", ["model_name"])


class _GeneratedTokens(Collector):
    """`arkq_generation_tokens_total`, read from the workers' plain counters when scraped."""

    def __init__(self) -> None:
        self.model_name = ""

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily(
            "arkq_generation_tokens", "Output tokens (text and reasoning) published.", labels=["model_name"]
        )
        family.add_metric([self.model_name], float(sum(stats.tokens for stats in WorkerStats.live())))
        yield family


_GENERATED = _GeneratedTokens()
_registered = False


class JobMetrics:
    """The observations of one worker's jobs, with its model's label bound; `enabled=False` observes
    nothing (metrics off: the benchmark compares the two)."""

    def __init__(self, model_name: str, *, enabled: bool):
        global _registered
        self.enabled = enabled
        self.model_name = model_name
        if not enabled:
            return
        if not _registered:
            REGISTRY.register(_GENERATED)
            _registered = True
        _GENERATED.model_name = model_name
        self._queue_time = QUEUE_TIME.labels(model_name)
        self._ttft = TIME_TO_FIRST_TOKEN.labels(model_name)
        self._itl = INTER_TOKEN_LATENCY.labels(model_name)
        self._e2e = E2E_LATENCY.labels(model_name)
        self._prompt_tokens = PROMPT_TOKENS.labels(model_name)
        self._takeovers = LEASE_TAKEOVERS.labels(model_name)
        self._running = RUNNING_JOBS.labels(model_name)

    def started(self, queue_time_s: float) -> None:
        if self.enabled:
            self._queue_time.observe(queue_time_s)

    def running(self, jobs: int) -> None:
        if self.enabled:
            self._running.set(jobs)

    def attempt(self, reason: str) -> None:
        if self.enabled:
            ATTEMPTS.labels(self.model_name, reason).inc()

    def takeover(self) -> None:
        if self.enabled:
            self._takeovers.inc()

    def first_token(self, seconds: float) -> None:
        if self.enabled:
            self._ttft.observe(seconds)

    def token_gap(self, seconds: float) -> None:
        if self.enabled:
            self._itl.observe(seconds)

    def llm_request(self, status: str) -> None:
        if self.enabled:
            LLM_REQUESTS.labels(self.model_name, status).inc()

    def ended(self, result: JobResult) -> None:
        if not self.enabled:
            return
        kind = result.error.kind if result.error is not None else ""
        JOBS.labels(self.model_name, result.status, kind).inc()
        self._e2e.observe(max(0.0, result.timings.total_s))
        prompt = (result.usage or {}).get("prompt_tokens")
        if isinstance(prompt, int) and prompt > 0:
            self._prompt_tokens.inc(prompt)


def serve(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve `/metrics` (prometheus-client's own server, in a thread) or say why it cannot."""
    try:
        return start_http_server(port, addr=host)
    except OSError as error:
        hint = ""
        if error.errno == errno.EADDRINUSE:
            hint = "; another process has it (a second worker on one host needs its own port)"
        raise ConfigError(
            f"worker.metrics_port: cannot listen on {host}:{port} ({error.strerror or error}){hint}"
        ) from None


def stop(server: tuple[WSGIServer, threading.Thread]) -> None:
    """Stop serving `/metrics` and free the port."""
    http, thread = server
    http.shutdown()
    http.server_close()
    thread.join(timeout=5)
