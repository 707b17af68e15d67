"""``GET /metrics``: the request metrics SGLang exports with ``--enable-metrics``, for the emulator's
requests, so that a dashboard built on SGLang's names shows something in the cpu profile too.

The names, types, help texts, buckets and the one label (``model_name``, the served model name) follow
SGLang's ``python/sglang/srt/metrics/collector.py`` (``TokenizerMetricsCollector`` and
``SchedulerMetricsCollector``) and when they are observed follows ``TokenizerManager.collect_metrics``
(``python/sglang/srt/managers/tokenizer_manager.py``):

- ``sglang:time_to_first_token_seconds``: arrival to the first output. A request that is not streamed
  gets its one output at the end, so its first token is its last.
- ``sglang:inter_token_latency_seconds``: the time between outputs divided over the tokens they
  brought, each token one observation (SGLang adds ``interval`` to the sum and ``num_new_tokens`` to the
  bucket of ``interval / num_new_tokens``). The emulator keeps to a schedule, so it observes each
  request once at its end: first to last token, over the tokens after the first.
- ``sglang:e2e_request_latency_seconds``, ``sglang:prompt_tokens_total``,
  ``sglang:generation_tokens_total``, ``sglang:num_requests_total``: once per request, when it ends
  (finished, aborted, cut or disconnected: SGLang ends them all as finished, the last three with an
  abort reason, which also counts in ``sglang:num_aborted_requests_total``).
- ``sglang:queue_time_seconds``: the wait for the scheduler. The emulator observes 0 per request (with
  batched pacing the wait for a prefill is part of the time to the first token, not observed here).
- ``sglang:num_running_reqs``, ``sglang:num_queue_reqs``: gauges, read when scraped (running: requests
  generating now; queued: requests waiting for their prefill with batched pacing, else always 0).

Requests refused before generation (a bad request, a directive's ``status``) are not observed: SGLang's
tokenizer manager answers those before the scheduler, and its metrics, see them. Newer SGLang releases add
labels (``engine_type``, ``tp_rank``, ...); queries that aggregate by ``model_name`` read both.

Cost: a request's observations are a few additions made once, at its end, into plain numbers (no lock:
one event loop owns them); the Prometheus text is built only when scraped. Each app has its own
registry, so several emulators can run in one process (tests, benchmarks).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "SGLangMetrics"]

#: What prometheus_client's own exposition answers with (text format 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# SGLang's default buckets (collector.py), so that histogram_quantile reads both servers alike.
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (*TTFT_BUCKETS, 600, 1200, 1800, 2400)
ITL_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040, 0.060, 0.080, 0.100,
    0.200, 0.400, 0.600, 0.800, 1.000, 2.000, 4.000, 6.000, 8.000,
)  # fmt: skip
QUEUE_BUCKETS = (
    0.0, 0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300, 400, 500,
    600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000,
)  # fmt: skip


class _Histogram:
    """A histogram's state as plain numbers: a count per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float, weight: int = 1, amount: float | None = None) -> None:
        """`weight` observations of `value`, adding `amount` (default `value` x `weight`) to the sum."""
        self.counts[bisect.bisect_left(self.bounds, value)] += weight
        self.total += value * weight if amount is None else amount

    def family(self, name: str, documentation: str, model: str) -> HistogramMetricFamily:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family = HistogramMetricFamily(name, documentation, labels=["model_name"])
        family.add_metric([model], cumulative, self.total)
        return family


class SGLangMetrics(Collector):
    """One emulator's SGLang metrics; :meth:`request_ended` observes a request, :meth:`render` answers
    a scrape."""

    def __init__(
        self, model_name: str, running: Callable[[], int], queued: Callable[[], int] = lambda: 0
    ) -> None:
        self.model_name = model_name
        self._running = running
        self._queued = queued
        self.ttft = _Histogram(TTFT_BUCKETS)
        self.itl = _Histogram(ITL_BUCKETS)
        self.e2e = _Histogram(E2E_BUCKETS)
        self.queue_time = _Histogram(QUEUE_BUCKETS)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.requests = 0
        self.aborted = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def request_ended(
        self,
        *,
        prompt_tokens: int,
        generation_tokens: int,
        created: float,
        first_token: float | None,
        last_token: float | None,
        ended: float,
        aborted: bool,
    ) -> None:
        """A request that reached generation has ended. Times are seconds on one monotonic clock:
        `created` its arrival, `first_token`/`last_token` the first and last output written (None: none
        was), `ended` now."""
        self.queue_time.observe(0.0)
        if first_token is not None:
            self.ttft.observe(first_token - created)
            if last_token is not None and generation_tokens > 1:
                interval = last_token - first_token
                after_first = generation_tokens - 1
                self.itl.observe(interval / after_first, after_first, interval)
        self.e2e.observe(ended - created)
        self.prompt_tokens += prompt_tokens
        self.generation_tokens += generation_tokens
        self.requests += 1
        self.aborted += aborted

    def collect(self) -> Iterable[Metric]:
        model = self.model_name
        counters = (
            ("sglang:prompt_tokens", "Number of prefill tokens processed.", self.prompt_tokens),
            ("sglang:generation_tokens", "Number of generation tokens processed.", self.generation_tokens),
            ("sglang:num_requests", "Number of requests processed.", self.requests),
            ("sglang:num_aborted_requests", "Number of requests aborted.", self.aborted),
        )
        for name, documentation, value in counters:
            counter = CounterMetricFamily(name, documentation, labels=["model_name"])
            counter.add_metric([model], value)
            yield counter
        gauges = (
            ("sglang:num_running_reqs", "The number of running requests.", self._running()),
            ("sglang:num_queue_reqs", "The number of requests in the waiting queue.", self._queued()),
        )
        for name, documentation, number in gauges:
            gauge = GaugeMetricFamily(name, documentation, labels=["model_name"])
            gauge.add_metric([model], number)
            yield gauge
        yield self.ttft.family(
            "sglang:time_to_first_token_seconds", "Histogram of time to first token in seconds.", model
        )
        yield self.itl.family(
            "sglang:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", model
        )
        yield self.e2e.family(
            "sglang:e2e_request_latency_seconds", "Histogram of End-to-end request latency in seconds", model
        )
        yield self.queue_time.family(
            "sglang:queue_time_seconds", "Histogram of queueing time in seconds.", model
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of everything above."""
        return generate_latest(self.registry)
