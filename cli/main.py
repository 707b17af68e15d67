"""`arkq`: submit and follow jobs, run a worker, check the LLM server, the emulator, the demo, the benchmark.

Each command's module is imported only when that command runs: `arkq submit` does not load the LLM
client, the emulator or the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging.config
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from arkq.errors import (
    ArkqError,
    ConfigError,
    InvalidRequest,
    JobFailed,
    JobLost,
    JobNotFound,
    QueueFull,
    RedisBusy,
    RedisNotAllowed,
    RedisOutOfMemory,
    RedisReadOnly,
    RedisRefused,
    RedisUnavailable,
)
from arkq.redis_failures import name_failure
from cli import exit_codes, jobs


def _lazy(module: str, function: str) -> Callable[[argparse.Namespace], Any]:
    """A handler that imports `module` only when its command runs."""

    def handler(args: argparse.Namespace) -> Any:
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is None or not module.startswith(error.name):
                raise
            # The image ships no benchmark: it runs from a checkout (`pip install -e '.[dev]'`).
            raise ConfigError(
                f"`arkq {args.command}` is not installed here ({module}): run it from a checkout"
            ) from None
        return getattr(loaded, function)(args)

    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkq", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="on a failure, print the traceback too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs.add_commands(commands)

    worker = commands.add_parser("worker", help="run a worker (same as `arq worker.WorkerSettings`)")
    worker.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    worker.add_argument("-v", "--verbose", action="store_true")
    worker.set_defaults(run=None, handler=run_worker)

    serve = commands.add_parser("serve", help="the HTTP gateway: OpenAI-compatible API and jobs API")
    _add("cli.serve", serve)
    serve.set_defaults(run=None, handler=_lazy("cli.serve", "run"))

    check = commands.add_parser("check-llm", help="is an OpenAI-compatible server answering at llm.base_url?")
    _add("cli.check_llm", check)
    check.set_defaults(run=None, handler=_lazy("cli.check_llm", "run"))

    fake = commands.add_parser("fake-llm", help="run the SGLang-compatible emulator")
    _add("fake_llm.__main__", fake)
    fake.set_defaults(run=None, handler=_lazy("fake_llm.__main__", "run_with"))

    demo = commands.add_parser("demo", help="the whole pipeline in one process, nothing to install")
    demo.add_argument("prompt", nargs="?", default="Tell me about message queues.")
    demo.add_argument("--itl-ms", type=float, default=30.0, help="emulated delay between tokens")
    demo.set_defaults(run=None, handler=run_demo)

    bench = commands.add_parser(
        "bench", help="measure what the queue adds (starts redis-server, the emulator and workers)"
    )
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="where to write results")
    bench.add_argument("--quick", action="store_true", help="small sizes: checks that it all runs")
    bench.add_argument("--only", nargs="+", metavar="SCENARIO", help="run only these scenarios")
    bench.set_defaults(run=None, handler=_lazy("bench.run", "run_with"))
    return parser


def _add(module: str, parser: argparse.ArgumentParser) -> None:
    importlib.import_module(module).add_arguments(parser)


def run_worker(args: argparse.Namespace) -> int:
    from arq.logs import default_log_config
    from arq.worker import run_worker as run_arq_worker

    from config_module import loader
    from worker import WorkerSettings
    from worker.preflight import check_before_start

    logging.config.dictConfig(default_log_config(args.verbose))
    asyncio.run(check_before_start(loader.config))
    run_arq_worker(WorkerSettings, burst=args.burst)
    return exit_codes.OK


def run_demo(args: argparse.Namespace) -> int:
    from cli.demo import demo

    return asyncio.run(demo(args.prompt, itl_ms=args.itl_ms))


#: The exit code for each kind of failure, most particular first.
FAILURE_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, exit_codes.USAGE),
    (InvalidRequest, exit_codes.USAGE),
    (QueueFull, exit_codes.QUEUE_FULL),
    (RedisUnavailable, exit_codes.REDIS_UNREACHABLE),
    (RedisOutOfMemory, exit_codes.REDIS_OUT_OF_MEMORY),
    (RedisReadOnly, exit_codes.REDIS_READ_ONLY),
    (RedisNotAllowed, exit_codes.REDIS_NOT_ALLOWED),
    (RedisBusy, exit_codes.REDIS_BUSY),
    (RedisRefused, exit_codes.REDIS_REFUSED),
    (JobNotFound, exit_codes.NOT_FOUND),
    (JobLost, exit_codes.NOT_FOUND),
    (JobFailed, exit_codes.JOB_FAILED),
    (OSError, exit_codes.SYSTEM_ERROR),
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command. A failure is one line on stderr and the exit code that names it
    (`cli/exit_codes.py`); `--debug` adds the traceback."""
    args = build_parser().parse_args(argv)
    try:
        if args.run is not None:
            return int(asyncio.run(args.run(args)))
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # `arkq submit ... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        return _report(error, debug=args.debug)


def _report(error: Exception, *, debug: bool) -> int:
    """Print `error` in one line (and its traceback under `--debug`); the exit code for it."""
    if debug:
        traceback.print_exception(error)
    if isinstance(error, RedisError) and not isinstance(error, ArkqError):
        error = name_failure(error)
    for kind, code in FAILURE_EXIT_CODES:
        if isinstance(error, kind):
            print(f"arkq: {error}", file=sys.stderr)
            return code
    hint = "" if debug else " (run with --debug for the traceback)"
    print(f"arkq: unexpected error, a bug in arkq: {type(error).__name__}: {error}{hint}", file=sys.stderr)
    return exit_codes.INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
