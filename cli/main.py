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
    JobIdInUse,
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
from cli import status as cli_status
from cli.help import (
    GATEWAY_ENV,
    JOBS_ENV,
    LLM_ENV,
    WORKER_ENV,
    Formatter,
    bench_scenarios,
    epilog,
    fake_llm_directives,
)
from config_module.loader import foreign_env_hints


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


#: The exit codes of the commands that run a server or a process (not a job).
_SYSTEM = (exit_codes.OK, exit_codes.USAGE, exit_codes.SYSTEM_ERROR, exit_codes.INTERRUPTED)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arkq",
        description=__doc__,
        formatter_class=Formatter,
        epilog="`arkq COMMAND --help` lists the command's options with their defaults, its exit codes "
        "and the ARK_* variables it reads.\n\n" + exit_codes.describe(*exit_codes.MEANINGS),
    )
    parser.add_argument("--debug", action="store_true", help="on a failure, print the traceback too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs.add_commands(commands)

    worker = commands.add_parser(
        "worker",
        help="run a worker (same as `arq worker.WorkerSettings`)",
        formatter_class=Formatter,
        epilog=epilog((*_SYSTEM, *exit_codes.REDIS_FAILURES), WORKER_ENV),
    )
    worker.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    worker.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    worker.add_argument(
        "--redis-url", help="Redis URL (default: redis.url from the configuration; sets ARK_REDIS__URL)"
    )
    worker.set_defaults(run=None, handler=run_worker)

    serve = commands.add_parser(
        "serve",
        help="the HTTP gateway: OpenAI-compatible API and jobs API",
        formatter_class=Formatter,
        epilog=epilog((*_SYSTEM, *exit_codes.REDIS_FAILURES), GATEWAY_ENV),
    )
    _add("cli.serve", serve)
    serve.set_defaults(run=None, handler=_lazy("cli.serve", "run"))

    status = commands.add_parser(
        "status",
        help="the queue and its workers on one screen (--watch, --json)",
        formatter_class=Formatter,
        epilog=epilog((exit_codes.OK, exit_codes.USAGE, *exit_codes.REDIS_FAILURES), JOBS_ENV),
    )
    cli_status.add_arguments(status)
    status.set_defaults(run=cli_status.run)

    check = commands.add_parser(
        "check-llm",
        help="is an OpenAI-compatible server answering at llm.base_url?",
        formatter_class=Formatter,
        epilog=epilog((exit_codes.OK, exit_codes.USAGE, exit_codes.LLM_UNREACHABLE), LLM_ENV),
    )
    _add("cli.check_llm", check)
    check.set_defaults(run=None, handler=_lazy("cli.check_llm", "run"))

    fake = commands.add_parser(
        "fake-llm",
        help="run the SGLang-compatible emulator",
        formatter_class=Formatter,
        epilog=epilog(_SYSTEM, None, before=fake_llm_directives()),
    )
    _add("fake_llm.__main__", fake)
    fake.set_defaults(run=None, handler=_lazy("fake_llm.__main__", "run_with"))

    demo = commands.add_parser(
        "demo",
        help="the whole pipeline in one process, nothing to install",
        formatter_class=Formatter,
        epilog=epilog(
            (exit_codes.OK, exit_codes.JOB_FAILED, exit_codes.USAGE, exit_codes.INTERRUPTED),
            "ARK_LLM__* but ARK_LLM__BASE_URL, ARK_QUEUE__*, ARK_WORKER__*, ARK_STREAMING__* "
            "(its Redis and its LLM server are in process)",
        ),
    )
    demo.add_argument("prompt", nargs="?", default="Tell me about message queues.", help="what to ask")
    demo.add_argument("--itl-ms", type=float, default=30.0, help="emulated delay between tokens")
    demo.set_defaults(run=None, handler=run_demo)

    scenarios = bench_scenarios()
    listed = ", ".join(scenarios) if scenarios else "(the benchmark is not installed here)"
    bench = commands.add_parser(
        "bench",
        help="measure what the queue adds (starts redis-server, the emulator and workers)",
        formatter_class=Formatter,
        epilog=epilog((*_SYSTEM, exit_codes.JOB_FAILED), None, before=f"scenarios: {listed}"),
    )
    bench.add_argument("--out", type=Path, default=Path("bench-results"), help="where to write results")
    bench.add_argument("--quick", action="store_true", help="small sizes: checks that it all runs")
    bench.add_argument(
        "--only", nargs="+", metavar="SCENARIO", help=f"run only these scenarios (of: {listed}; default: all)"
    )
    bench.set_defaults(run=None, handler=_lazy("bench.run", "run_with"))
    for command in commands.choices.values():
        _show_defaults(command)
    return parser


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Options without help text (the emulator's own) still show their default in `--help`."""
    for action in parser._actions:
        if action.help is None and action.option_strings and action.default not in (None, False):
            action.help = "(default: %(default)s)"


def _add(module: str, parser: argparse.ArgumentParser) -> None:
    importlib.import_module(module).add_arguments(parser)


def run_worker(args: argparse.Namespace) -> int:
    if args.redis_url is not None:
        # The configuration, which the worker's settings load on import (below), reads it.
        os.environ["ARK_REDIS__URL"] = args.redis_url
    from arq.worker import run_worker as run_arq_worker

    from config_module import loader
    from worker import WorkerSettings
    from worker.logs import log_config
    from worker.preflight import check_before_start
    from worker.settings import use_uvloop

    logging.config.dictConfig(log_config(args.verbose, loader.config.worker.log_format))
    asyncio.run(check_before_start(loader.config))
    use_uvloop()
    run_arq_worker(WorkerSettings, burst=args.burst)
    return exit_codes.OK


def run_demo(args: argparse.Namespace) -> int:
    from cli.demo import demo

    return asyncio.run(demo(args.prompt, itl_ms=args.itl_ms))


#: The exit code for each kind of failure, most particular first.
FAILURE_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, exit_codes.USAGE),
    (JobIdInUse, exit_codes.JOB_ID_IN_USE),
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
    for hint in foreign_env_hints(os.environ):
        print(f"arkq: note: {hint}", file=sys.stderr)
    try:
        if args.run is not None:
            return int(asyncio.run(args.run(args)))
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # `arkq submit ... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except KeyboardInterrupt:
        return exit_codes.INTERRUPTED
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
