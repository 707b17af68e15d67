"""The typed shape of arkq's configuration.

Every setting lives here with its type and default; `config.yaml` at the project top level repeats the
defaults for people to read and edit (a test keeps the two in step). Sections forbid unknown keys so a
typo fails at start with the key's name instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class LLMConfig(Section):
    """How workers reach the OpenAI-compatible (SGLang) server."""

    base_url: str = "http://0.0.0.0:30000/v1"
    model_name: str = "tgi"
    #: Secret: set it with ARK_LLM__API_KEY, not in YAML.
    api_key: SecretStr | None = None
    max_tokens: int = Field(1024, gt=0)
    temperature: float = Field(0.7, ge=0, le=2)
    #: Seconds to open a connection to the server.
    connect_timeout_s: float = Field(5.0, gt=0)
    #: Seconds without a byte from the server (first token or between chunks) before giving up.
    read_timeout_s: float = Field(120.0, gt=0)
    #: Retries of transient failures before any output, for a whole job: a job sends at most
    #: max_retries + 1 requests that fail before streaming anything, whatever its number of attempts.
    max_retries: int = Field(3, ge=0)
    #: Exponential backoff: base * 2**attempt, jittered, capped at backoff_max_s.
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(8.0, gt=0)
    #: The longest a server's Retry-After is waited for; a longer one is cut to this.
    max_retry_after_s: float = Field(60.0, gt=0)


class RedisConfig(Section):
    #: A password may be in the URL (redis://:secret@host:6379/0) or in ARK_REDIS__PASSWORD.
    url: str = "redis://localhost:6379/0"
    password: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _a_redis_url(cls, url: str) -> str:
        # Checked here, so that every process refuses it at start with the setting's name, not deep in
        # a client that redis-py builds (a worker's pool is built when its settings are imported).
        scheme = urlsplit(url).scheme
        if scheme not in {"redis", "rediss", "unix"}:
            has = f"{scheme}://" if "://" in url else "no scheme"
            raise ValueError(
                f"a Redis URL starts with redis://, rediss:// or unix:// (for example "
                f"redis://localhost:6379/0); this one has {has}"
            )
        return url

    #: Seconds to connect before a clear error instead of a hang.
    connect_timeout_s: float = Field(5.0, gt=0)
    #: Seconds a worker keeps retrying Redis through an outage (a restart, a failover) before it gives up.
    #: Producers give up after connect_timeout_s instead: their callers want an answer.
    retry_s: float = Field(30.0, gt=0)
    #: Seconds of silence after which a connection counts as dead, though nothing closed it (a failed
    #: host, a partition, a NAT that forgot it): the read timeout of every command, the pub/sub
    #: heartbeat and TCP keepalive all follow it. Above any command's legitimate run time.
    dead_after_s: float = Field(30.0, gt=0)


class QueueConfig(Section):
    #: arq's own default queue name, so plain arq tooling sees arkq's jobs.
    name: str = "arq:queue"
    #: Largest accepted job payload (JSON bytes); larger requests fail in enqueue.
    max_payload_bytes: int = Field(1_000_000, gt=0)
    #: Jobs queued or running at most; an enqueue beyond it raises QueueFull and writes nothing.
    max_depth: int = Field(100_000, gt=0)
    #: A job still queued this many seconds after its enqueue is dropped with an `error` event:
    #: whoever asked has stopped waiting. At most a day (arq forgets jobs after that).
    job_expiry_s: float = Field(3600.0, gt=0, lt=86_400)


class WorkerConfig(Section):
    #: Jobs one worker process runs at once: LLM calls are I/O bound and the server batches them.
    max_jobs: int = Field(64, gt=0)
    #: Hard limit on one job's run time, seconds.
    job_timeout_s: float = Field(300.0, gt=0)
    #: Seconds a job's result stays readable after it finished.
    keep_result_s: float = Field(3600.0, gt=0)
    #: Seconds between queue polls when idle.
    poll_delay_s: float = Field(0.5, gt=0)
    #: Attempts per job, whatever restarted it: a crashed or stopped worker, a stream cut mid-way.
    max_tries: int = Field(5, gt=0)
    #: An attempt after one that died mid-stream continues the text already published (SGLang's
    #: continue_final_message) instead of voiding it with a `reset` and starting over, where sound.
    resume_partial: bool = True
    #: A running job's lease: another worker restarts the job this many seconds after its worker died.
    lease_s: float = Field(6.0, gt=0)
    #: How often a worker looks at its leases: every job's cancel flag (for a cancel whose message it
    #: missed), and an extension for each lease about a third of whose TTL has passed.
    lease_renew_s: float = Field(0.5, gt=0)
    #: On SIGTERM, seconds running jobs may take to finish before they are handed to another worker.
    shutdown_grace_s: float = Field(25.0, ge=0)
    #: Seconds between health-check key writes (`arq --check` reads it).
    health_check_interval_s: float = Field(60.0, gt=0)
    #: Log prompts and answers (arq's job lines) for debugging; off, logs hold job IDs, sizes, timings.
    log_content: bool = False
    #: `text`: lines for people; `json`: one JSON object per line with `job_id`, `attempt`, `worker`,
    #: `event` and durations, so one grep finds a job's whole life across workers and gateways.
    log_format: Literal["text", "json"] = "text"
    #: Serve Prometheus metrics on this port (`/metrics`); unset, no metrics are kept or served.
    metrics_port: int | None = Field(None, gt=0, lt=65536)
    #: The address the metrics port listens on.
    metrics_host: str = "0.0.0.0"
    #: Seconds between the worker's heartbeat records in Redis (`arkq status`, the console).
    heartbeat_s: float = Field(2.0, gt=0)


class StreamingConfig(Section):
    #: Events of job J are published on the channel f"{channel_prefix}{J}".
    channel_prefix: str = Field("ark:tokens:", min_length=1)
    #: Seconds the per-job replay log of events stays in Redis after its last event.
    replay_ttl_s: float = Field(3600.0, gt=0)


class GatewayConfig(Section):
    """`arkq serve`: the HTTP gateway (OpenAI-compatible API, jobs API, resumable event streams)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, gt=0, lt=65536)
    #: Tenant name → API key, or "sha256:<hex>" of the key so that no plaintext key sits in the config.
    #: Empty: no keys, and the gateway serves only on a loopback address.
    api_keys: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # ARK_GATEWAY__API_KEYS= (set but empty, as compose passes an unset variable) means no keys.
        return {} if value in ("", None) else value

    #: Jobs a key may have queued or running at once; beyond it, 429.
    max_active_jobs_per_key: int = Field(100, gt=0)
    #: Largest request body accepted; beyond it, 413.
    max_body_bytes: int = Field(2_000_000, gt=0)
    #: A client that disconnects from POST /v1/chat/completions cancels its job (header
    #: `X-Arkq-On-Disconnect: continue` keeps it running). Jobs API readers never cancel.
    cancel_on_disconnect: bool = True
    #: Seconds between comment lines on an idle event stream, so proxies keep the connection open.
    sse_heartbeat_s: float = Field(15.0, gt=0)
    #: As worker.log_format: `text` or `json` lines.
    log_format: Literal["text", "json"] = "text"
    #: Redis connections one gateway process uses at most for replay reads and commands (its live
    #: events arrive on one more, shared by every reader).
    max_redis_connections: int = Field(6, gt=0)


class ArkConfig(Section):
    llm: LLMConfig = LLMConfig()
    redis: RedisConfig = RedisConfig()
    queue: QueueConfig = QueueConfig()
    worker: WorkerConfig = WorkerConfig()
    streaming: StreamingConfig = StreamingConfig()
    gateway: GatewayConfig = GatewayConfig()

    @model_validator(mode="after")
    def _lease_renewed_well_before_it_ends(self) -> Self:
        if self.worker.lease_renew_s * 3 > self.worker.lease_s:
            raise ValueError(
                f"worker.lease_renew_s ({self.worker.lease_renew_s}) must be at most a third of "
                f"worker.lease_s ({self.worker.lease_s}), so one late renewal does not lose the lease"
            )
        return self

    @model_validator(mode="after")
    def _replay_outlives_jobs_and_results(self) -> Self:
        # A job's events must stay replayable while it runs and for as long as its result is kept,
        # or a late reader would find a result whose events are gone.
        ttl = self.streaming.replay_ttl_s
        for key, value in (
            ("worker.job_timeout_s", self.worker.job_timeout_s),
            ("worker.keep_result_s", self.worker.keep_result_s),
        ):
            if ttl < value:
                raise ValueError(f"streaming.replay_ttl_s ({ttl}) must be at least {key} ({value})")
        return self

    def get(self, dotted_key: str, default: Any = None) -> Any:
        """Look a setting up by its dotted name, as ARKOS code does: `config.get("llm.base_url")`."""
        node: Any = self
        for part in dotted_key.split("."):
            if isinstance(node, BaseModel) and part in type(node).model_fields:
                node = getattr(node, part)
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return default
        if isinstance(node, SecretStr):
            return node.get_secret_value()
        return node
