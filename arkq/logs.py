"""Log lines that find a job: `text` for people, `json` (one object per line) for machines.

A JSON line carries `job_id`, `attempt`, `worker` and `event` beside the message, and the durations a
line reports (`queue_s`, `e2e_s`, ...), so that one grep for a job ID across every worker's and
gateway's logs finds the job's whole life. Lines written inside a job need not name the job: the job
sets `job_context` when it starts, and `JobContextFilter` copies it into every record written within,
the LLM link's included.
"""

from __future__ import annotations

import contextvars
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["text", "json"]

#: The attributes every `logging.LogRecord` has: anything else on a record came from `extra=` (but
#: uvicorn's `color_message`, its message again with terminal colours).
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


@dataclass(slots=True)
class JobLogContext:
    """The job whose code is running: its ID, its current attempt, the worker running it."""

    job_id: str
    worker: str
    attempt: int = 0


#: The job the current task works for; None outside jobs.
job_context: contextvars.ContextVar[JobLogContext | None] = contextvars.ContextVar("arkq_job", default=None)


class JobContextFilter(logging.Filter):
    """Puts the running job's ID, attempt and worker on each record that does not name them itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = job_context.get()
        if context is not None:
            if not hasattr(record, "job_id"):
                record.job_id = context.job_id
            if not hasattr(record, "worker"):
                record.worker = context.worker
            if not hasattr(record, "attempt") and context.attempt:
                record.attempt = context.attempt
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the job's fields, any `extra=`."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def use_format(handlers: list[logging.Handler], log_format: LogFormat) -> None:
    """Give `handlers` the job context filter and, for `json`, the JSON formatter (idempotent)."""
    for handler in handlers:
        if not any(isinstance(existing, JobContextFilter) for existing in handler.filters):
            handler.addFilter(JobContextFilter())
        if log_format == "json" and not isinstance(handler.formatter, JsonFormatter):
            handler.setFormatter(JsonFormatter())
