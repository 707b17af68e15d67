"""arkq's core: what producers, workers and every tool on top share.

The job and event contract (`arkq.contract`, `arkq.messages`), the Redis protocol (`arkq.keys`, the
Lua scripts in `arkq.scripts`, `arkq.envelope` for arq's job format, `arkq.connection`), the lease
(`arkq.lease`), the one backoff policy (`arkq.backoff`), the exception tree (`arkq.errors`), and what
both model links share: their stream events (`arkq.stream_events`) and closing what they opened when
their event loop ends (`arkq.loop_bound`). Nothing here imports the LLM client, arq or anything above
the core, so `import producer` stays light.
"""

from arkq.errors import (
    ArkqError,
    ConfigError,
    InvalidRequest,
    JobCancelled,
    JobError,
    JobFailed,
    JobLost,
    JobNotFound,
    ModelError,
    QueueFull,
    RedisUnavailable,
    StreamReset,
)

__all__ = [
    "ArkqError",
    "ConfigError",
    "InvalidRequest",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobLost",
    "JobNotFound",
    "ModelError",
    "QueueFull",
    "RedisUnavailable",
    "StreamReset",
]
