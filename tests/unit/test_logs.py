"""JSON log lines: a job's lines carry its ID, attempt and worker, arq's own job lines included."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
import logging
import re
from collections.abc import Iterator

import arq.worker
import pytest

from arkq.logs import JobLogContext, JsonFormatter, job_context, use_format
from worker.arq_patches import use_log_config
from worker.logs import ARQ_EVENTS, ArqJobLines, configure_logs, log_config


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    use_format([handler], "json")
    handler.addFilter(ArqJobLines())
    logger = logging.getLogger("arkq.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def parsed(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


async def test_lines_written_inside_a_job_carry_its_id_attempt_and_worker(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = lines

    async def job() -> None:
        context = JobLogContext("job-7", "host:1")
        job_context.set(context)
        logger.info("before any attempt")
        context.attempt = 2
        logger.warning("retrying in %.1f s", 0.5, extra={"event": "retry", "delay_s": 0.5})

    await asyncio.create_task(job())
    logger.info("outside")
    first, second, outside = parsed(out)
    assert first["job_id"] == "job-7" and first["worker"] == "host:1" and "attempt" not in first
    assert second["attempt"] == 2 and second["event"] == "retry" and second["delay_s"] == 0.5
    assert second["message"] == "retrying in 0.5 s" and second["level"] == "warning"
    assert "job_id" not in outside


def test_an_exception_is_one_line_with_its_traceback(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, out = lines
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = out.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


def test_arqs_job_lines_name_the_job_and_the_event() -> None:
    """The formats are arq 0.28's own (`Worker.run_job`), read from its source: a change there shows."""
    source = inspect.getsource(arq.worker.Worker.run_job)
    formats = re.findall(r"logger\.\w+\(\s*'(%6\.2fs [^ ] %s[^']*)'", source)
    marks = {fmt.split(" ")[1] for fmt in formats}
    assert marks >= {"→", "←", "↻"}, formats
    assert marks <= set(ARQ_EVENTS), f"arq has a job line arkq does not know: {marks - set(ARQ_EVENTS)}"
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ArqJobLines())
    for fmt in formats:
        specs = re.findall(r"%[0-9.]*([sfd])", fmt)
        args = tuple(
            "job-1:generate" if i == 1 else {"s": "x", "f": 0.5, "d": 1}[spec] for i, spec in enumerate(specs)
        )
        handler.handle(logging.LogRecord("arq.worker", logging.INFO, "", 0, fmt, args, None))
    events = [(line["job_id"], line["event"]) for line in parsed(out)]
    assert events == [("job-1", ARQ_EVENTS[fmt.split(" ")[1]]) for fmt in formats]


def test_configure_logs_reaches_arqs_handlers() -> None:
    arq_logger = logging.getLogger("arq")
    handler = logging.StreamHandler(io.StringIO())
    arq_logger.addHandler(handler)
    try:
        configure_logs("json")
        assert isinstance(handler.formatter, JsonFormatter)
        assert any(isinstance(f, ArqJobLines) for f in handler.filters)
    finally:
        arq_logger.removeHandler(handler)


def test_arqs_command_sets_up_logging_as_arkq_worker_does() -> None:
    """`arq worker.WorkerSettings` imports the settings, then calls `arq.cli.default_log_config`: the name
    arkq replaces (`arq_patches.use_log_config`). arq 0.28's own source says so."""
    import arq.cli

    source = inspect.getsource(arq.cli.cli.callback)  # type: ignore[attr-defined]  # a click command
    assert source.index("import_string(worker_settings)") < source.index("default_log_config(verbose)")
    original = arq.cli.default_log_config
    try:
        use_log_config("json")
        config = arq.cli.default_log_config(False)
    finally:
        arq.cli.default_log_config = original  # type: ignore[attr-defined]
    assert config["formatters"]["arq.standard"] == {"()": JsonFormatter}
    assert config["loggers"]["arkq"]["handlers"] == ["arq.standard"]
    assert config["handlers"]["arq.standard"]["filters"] == ["arkq.job", "arkq.arq_lines"]
    assert log_config(True, "text")["formatters"]["arq.standard"]["format"] == "%(asctime)s: %(message)s"
