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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.errors import ConfigError, RedisUnavailable
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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs.add_commands(commands)

    worker = commands.add_parser("worker", help="run a worker (same as `arq worker.WorkerSettings`)")
    worker.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    worker.add_argument("-v", "--verbose", action="store_true")
    worker.set_defaults(run=None, handler=run_worker)

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

    from worker import WorkerSettings

    logging.config.dictConfig(default_log_config(args.verbose))
    run_arq_worker(WorkerSettings, burst=args.burst)
    return exit_codes.OK


def run_demo(args: argparse.Namespace) -> int:
    from cli.demo import demo

    return asyncio.run(demo(args.prompt, itl_ms=args.itl_ms))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run is not None:
            return int(asyncio.run(args.run(args)))
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"arkq: {error}", file=sys.stderr)
        return exit_codes.USAGE
    except (RedisConnectionError, RedisTimeoutError, RedisUnavailable) as error:
        print(f"arkq: cannot reach Redis: {error}", file=sys.stderr)
        return exit_codes.REDIS_UNREACHABLE
    except BrokenPipeError:  # `arkq submit ... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exit_codes.OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
