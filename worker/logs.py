"""The worker's log lines in `worker.log_format`, arq's own job lines included.

arq writes a line as each job starts and ends (`  0.01s → <job_id>:generate(...)`), outside the job's
own task, so the job context (`arkq.logs.job_context`) does not reach them: `ArqJobLines` reads the job
ID from the line's arguments instead, and names the event by arq's arrow. Checked against arq 0.28's
`Worker.run_job` (tests/unit/test_logs.py).
"""

from __future__ import annotations

import logging
from typing import Any

from arq.logs import default_log_config

from arkq.envelope import JOB_FUNCTION
from arkq.logs import JobContextFilter, JsonFormatter, LogFormat, use_format

#: arq's marks in its job lines, and the event each stands for.
ARQ_EVENTS = {
    "→": "arq_job_start",
    "←": "arq_job_end",
    "↻": "arq_job_retry",
    "⊘": "arq_job_aborted",
    "!": "arq_job_max_tries",
}
_REF_SUFFIX = ":" + JOB_FUNCTION


class ArqJobLines(logging.Filter):
    """Puts `job_id` and `event` on arq's job lines, read from the line's own arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("arq") or not isinstance(record.args, tuple) or len(record.args) < 2:
            return True
        ref = record.args[1]
        if isinstance(ref, str) and ref.endswith(_REF_SUFFIX) and not hasattr(record, "job_id"):
            record.job_id = ref[: -len(_REF_SUFFIX)]
            mark = str(record.msg).split("s ", 1)[-1][:1]
            record.event = ARQ_EVENTS.get(mark, "arq")
        return True


def configure_logs(log_format: LogFormat) -> None:
    """Apply `log_format` to every handler the worker's lines go through (arq's, arkq's, the root's)."""
    handlers: list[logging.Handler] = []
    for name in ("", "arq", "arkq", "model_module"):
        for handler in logging.getLogger(name).handlers:
            if handler not in handlers:
                handlers.append(handler)
    use_format(handlers, log_format)
    for handler in handlers:
        if not any(isinstance(existing, ArqJobLines) for existing in handler.filters):
            handler.addFilter(ArqJobLines())


def log_config(verbose: bool, log_format: LogFormat) -> dict[str, Any]:
    """arq's own logging configuration (its handler and levels), which the worker's lines (`arkq`, the
    LLM link's `model_module`) share, in `log_format` from the first line on. `arkq worker` applies it;
    for `arq worker.WorkerSettings`, `arq_patches.use_log_config` has arq's command apply it."""
    config = default_log_config(verbose)
    handler, level = config["handlers"]["arq.standard"], config["handlers"]["arq.standard"]["level"]
    config["filters"] = {"arkq.job": {"()": JobContextFilter}, "arkq.arq_lines": {"()": ArqJobLines}}
    handler["filters"] = ["arkq.job", "arkq.arq_lines"]
    if log_format == "json":
        config["formatters"]["arq.standard"] = {"()": JsonFormatter}
    for name in ("arkq", "model_module"):
        config["loggers"][name] = {"handlers": ["arq.standard"], "level": level, "propagate": False}
    return config
