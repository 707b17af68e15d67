"""`arkq`: submit and follow jobs, run a worker, the SGLang emulator, or the all-in-one demo."""

from __future__ import annotations

import argparse
import asyncio
import logging.config
import os
import sys
from collections.abc import Sequence

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from arkq.fake_llm import __main__ as fake_llm_cli
from bench import run as bench_run
from config_module.loader import ConfigError
from producer import cli as producer_cli
from producer.cli import EXIT_REDIS_UNREACHABLE, EXIT_USAGE
from producer.errors import RedisUnavailable


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arkq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    producer_cli.add_commands(commands)

    worker = commands.add_parser("worker", help="run a worker (same as `arq worker.WorkerSettings`)")
    worker.add_argument("--burst", action="store_true", help="stop once the queue is empty")
    worker.add_argument("-v", "--verbose", action="store_true")
    worker.set_defaults(run=None, handler=run_worker)

    fake = commands.add_parser("fake-llm", help="run the SGLang-compatible emulator")
    fake_llm_cli.add_arguments(fake)
    fake.set_defaults(run=None, handler=run_fake_llm)

    demo = commands.add_parser("demo", help="the whole pipeline in one process, nothing to install")
    demo.add_argument("prompt", nargs="?", default="Tell me about message queues.")
    demo.add_argument("--itl-ms", type=float, default=30.0, help="emulated delay between tokens")
    demo.set_defaults(run=None, handler=run_demo)

    bench = commands.add_parser(
        "bench", help="measure what the queue adds (starts redis-server, the emulator and workers)"
    )
    bench_run.add_arguments(bench)
    bench.set_defaults(run=None, handler=bench_run.run_with)
    return parser


def run_worker(args: argparse.Namespace) -> int:
    from arq.logs import default_log_config
    from arq.worker import run_worker as run_arq_worker

    from worker import WorkerSettings

    logging.config.dictConfig(default_log_config(args.verbose))
    run_arq_worker(WorkerSettings, burst=args.burst)  # type: ignore[arg-type]
    return 0


def run_fake_llm(args: argparse.Namespace) -> int:
    fake_llm_cli.run_with(args)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from arkq.demo import demo

    return asyncio.run(demo(args.prompt, itl_ms=args.itl_ms))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run is not None:
            return asyncio.run(args.run(args))
        return args.handler(args)
    except ConfigError as error:
        print(f"arkq: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (RedisConnectionError, RedisTimeoutError, RedisUnavailable) as error:
        print(f"arkq: cannot reach Redis: {error}", file=sys.stderr)
        return EXIT_REDIS_UNREACHABLE
    except BrokenPipeError:  # `arkq submit ... | head`: the reader has gone, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
