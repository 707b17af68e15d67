"""Every Redis key and channel arkq reads or writes, arq's included: the protocol on one page.

`J` is a job ID, `Q` the queue (`queue.name`, default `arq:queue`), `H` a worker's host name.

| name                 | type    | written by                                     | lives                   |
|----------------------|---------|------------------------------------------------|-------------------------|
| `Q`                  | zset    | producer (enqueue.lua); arq (retry, finish)    | until the job ends      |
| `arq:job:J`          | string  | producer (enqueue.lua): arq's job envelope     | until it ends (a day)   |
| `arq:in-progress:J`  | string  | arq's claim (`1`), then the lease (`leased`)   | `lease_s`, renewed      |
| `arq:retry:J`        | string  | arq: the job's try count                       | about a day             |
| `arq:result:J`       | string  | arq: its record of the finished job            | `worker.keep_result_s`  |
| `Q:health-check:H`   | string  | arq's heartbeat, one key per host              | check interval + 1 s    |
| `ark:lease:J`        | string  | worker (lease_*.lua): the holder's token       | `lease_s`, extended     |
| `ark:events:J`       | list    | worker (publish.lua), cancel.lua: events, JSON | `streaming.replay_ttl_s` |
| `ark:result:J`       | string  | worker (publish.lua), cancel.lua: JobResult    | `worker.keep_result_s`  |
| `ark:cancel:J`       | string  | producer (cancel.lua): a cancel request        | `worker.keep_result_s`  |
| `ark:tokens:J`       | channel | worker (publish.lua), cancel.lua: each event   | live only               |
| `ark:wake:Q`         | channel | producer (enqueue.lua): a job was enqueued     | live only               |
| `ark:cancels:Q`      | channel | producer (cancel.lua): a running job cancelled | live only               |
| `ark:pickedto:Q`     | string  | worker (pick.lua): the last job a pick saw     | `PICK_CURSOR_TTL_MS`    |
| `ark:owner:J`        | string  | producer (enqueue.lua): the job's tenant       | the job's lifetime      |
| `ark:active:T`       | zset    | producer (enqueue.lua): tenant T's live jobs   | a day after the last    |
| `ark:request:J`      | string  | producer (enqueue.lua): the request's digest   | the job's lifetime      |
| `ark:probe`          | none    | worker start-up: a DEL, to see writes allowed  | never exists            |
| `ark:workers:Q`      | hash    | worker: its heartbeat record, JSON, by name    | a day after the last    |
| `ark:failures:Q`     | list    | worker: the latest failed jobs, newest first   | capped, a day           |

The event channel's prefix is a setting (`streaming.channel_prefix`); an event's index in the log is
its `seq`, and the log lives `streaming.replay_ttl_s` after its last event; `lease_s` is
`worker.lease_s`. arq's names are fixed by arq itself: they are spelled here once, and a test checks
them against `arq.constants` (importing arq here would load its worker into every producer).
"""

from __future__ import annotations

# arq's own names (arq.constants, arq 0.28.0).
ARQ_JOB_PREFIX = "arq:job:"
ARQ_CLAIM_PREFIX = "arq:in-progress:"
ARQ_RETRY_PREFIX = "arq:retry:"
ARQ_RESULT_PREFIX = "arq:result:"
ARQ_HEALTH_CHECK_SUFFIX = ":health-check"
#: How long arq keeps a queued job's envelope beyond its expected start (arq's `expires_extra_ms`).
ARQ_JOB_EXPIRES_EXTRA_MS = 86_400_000

# arkq's names.
EVENT_LOG_PREFIX = "ark:events:"
RESULT_PREFIX = "ark:result:"
CANCEL_PREFIX = "ark:cancel:"
LEASE_PREFIX = "ark:lease:"
WAKE_PREFIX = "ark:wake:"
CANCELS_PREFIX = "ark:cancels:"
#: "score\nid" (pick.lua). Not `ark:cursor:`, which held a bare score: scripts of an earlier arkq still
#: running beside these (a rolling upgrade, a producer not yet upgraded) keep to that key and cannot
#: read this one.
PICK_CURSOR_PREFIX = "ark:pickedto:"
#: How long a pick cursor lives (pick.lua): a job given back below it waits at most this long to be picked.
PICK_CURSOR_TTL_MS = 500
OWNER_PREFIX = "ark:owner:"
ACTIVE_PREFIX = "ark:active:"
REQUEST_DIGEST_PREFIX = "ark:request:"
WORKERS_PREFIX = "ark:workers:"
FAILURES_PREFIX = "ark:failures:"
#: Deleted (never written) at worker start-up: a write Redis refuses on a replica or to a user without it.
WRITE_PROBE_KEY = "ark:probe"


def arq_job_key(job_id: str) -> str:
    return ARQ_JOB_PREFIX + job_id


def claim_key(job_id: str) -> str:
    """arq's claim on a job: `1` from arq, `leased` once arkq's lease has replaced it."""
    return ARQ_CLAIM_PREFIX + job_id


def arq_retry_key(job_id: str) -> str:
    return ARQ_RETRY_PREFIX + job_id


def arq_result_key(job_id: str) -> str:
    return ARQ_RESULT_PREFIX + job_id


def health_check_key(queue_name: str, host: str) -> str:
    return f"{queue_name}{ARQ_HEALTH_CHECK_SUFFIX}:{host}"


def event_log_key(job_id: str) -> str:
    return EVENT_LOG_PREFIX + job_id


def result_key(job_id: str) -> str:
    return RESULT_PREFIX + job_id


def cancel_key(job_id: str) -> str:
    return CANCEL_PREFIX + job_id


def lease_key(job_id: str) -> str:
    return LEASE_PREFIX + job_id


def event_channel(channel_prefix: str, job_id: str) -> str:
    return channel_prefix + job_id


def wake_channel(queue_name: str) -> str:
    return WAKE_PREFIX + queue_name


def cancels_channel(queue_name: str) -> str:
    """Where a running job's cancel is announced, its ID the message: the queue's workers listen."""
    return CANCELS_PREFIX + queue_name


def owner_key(job_id: str) -> str:
    """The tenant that enqueued the job (the gateway's key name), when one did."""
    return OWNER_PREFIX + job_id


def active_jobs_key(tenant: str) -> str:
    """The tenant's jobs that may still be queued or running; pruned of ended ones at each enqueue."""
    return ACTIVE_PREFIX + tenant


def request_digest_key(job_id: str) -> str:
    """The digest of the job's request: enqueueing its ID again with another request is refused."""
    return REQUEST_DIGEST_PREFIX + job_id


def workers_key(queue_name: str) -> str:
    """Every worker's latest heartbeat record (`arkq.status.WorkerRecord`), by worker name: one read
    lists the fleet, however large the queue."""
    return WORKERS_PREFIX + queue_name


def failures_key(queue_name: str) -> str:
    """The latest failed jobs (`arkq.status.Failure`), newest first, capped."""
    return FAILURES_PREFIX + queue_name


def pick_cursor_key(queue_name: str) -> str:
    """Where the queue's picks start: the score of the last job a pick looked at (pick.lua)."""
    return PICK_CURSOR_PREFIX + queue_name
