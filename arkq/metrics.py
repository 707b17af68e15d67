"""What workers and gateways both export to Prometheus: the fleet's figures, read from Redis.

Names follow SGLang's (`sglang:num_queue_reqs`, ...) with an `arkq_` prefix and the same `model_name`
label, so that arkq's queue and SGLang's own queue sit side by side on one dashboard. The fleet gauges
are read from Redis (`arkq.status`), not counted per process: every worker and gateway reports the same
value, and a dashboard takes the `max` over them.

Everything goes in prometheus-client's default registry, which also carries the `process_*` metrics
(CPU, memory, open files) of the process.
"""

from __future__ import annotations

from contextlib import suppress

from prometheus_client import Counter, Gauge

from arkq.status import FleetStatus

#: Seconds, for waits that may be sub-millisecond (a pickup) or minutes (a backlog).
WAIT_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
)  # fmt: skip
#: Seconds, for the gap between two tokens: a GPU's decode step is 10-100 ms.
TOKEN_GAP_BUCKETS = (
    0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
    0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip
#: Seconds, for a whole generation: from a short answer to the job timeout.
JOB_BUCKETS = (
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0,
    90.0, 120.0, 180.0, 300.0, 600.0, 1200.0, 1800.0,
)  # fmt: skip
#: Seconds, for an HTTP request to the gateway (a stream lasts as long as its job).
REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

QUEUE_REQS = Gauge(
    "arkq_num_queue_reqs", "Jobs due and waiting for a worker slot (fleet-wide, from Redis).", ["model_name"]
)
RUNNING_REQS = Gauge(
    "arkq_num_running_reqs", "Jobs the live workers are running (fleet-wide, from Redis).", ["model_name"]
)
DEFERRED_REQS = Gauge(
    "arkq_num_deferred_reqs",
    "Jobs whose start is in the future: a retry's deferral (fleet-wide, from Redis).",
    ["model_name"],
)
WORKERS_ALIVE = Gauge(
    "arkq_workers_alive", "Workers whose heartbeat is recent (fleet-wide, from Redis).", ["model_name"]
)
REDIS_ERRORS = Counter(
    "arkq_redis_errors", "Redis commands that failed after the client's retries, in this process."
)


def show_fleet(status: FleetStatus, model_name: str) -> None:
    """Set the fleet gauges from a status reading."""
    QUEUE_REQS.labels(model_name).set(status.queued)
    RUNNING_REQS.labels(model_name).set(status.running)
    DEFERRED_REQS.labels(model_name).set(status.deferred)
    WORKERS_ALIVE.labels(model_name).set(status.workers_alive)


def hide_fleet(model_name: str) -> None:
    """Drop the fleet gauges when Redis could not be read: a stale reading would stand, and a dashboard
    taking the `max` over every process would show it as current (a drained queue as still deep)."""
    for gauge in (QUEUE_REQS, RUNNING_REQS, DEFERRED_REQS, WORKERS_ALIVE):
        with suppress(KeyError):  # never set, or dropped already
            gauge.remove(model_name)
