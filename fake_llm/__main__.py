"""``python -m fake_llm`` (and ``arkq fake-llm``): run the SGLang emulator from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .server import run

__all__ = ["add_arguments", "build_parser", "main", "run_with"]

DESCRIPTION = "SGLang-compatible OpenAI server emulator with deterministic output and fault injection."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model", default="tgi", help="served model name (default: %(default)s)")
    parser.add_argument("--ttft-ms", type=float, default=0.0, help="delay before the first token")
    parser.add_argument("--itl-ms", type=float, default=0.0, help="delay between tokens")
    parser.add_argument("--context-length", type=int, default=32768)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fake_llm", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def run_with(args: argparse.Namespace) -> None:
    run(
        host=args.host,
        port=args.port,
        model=args.model,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        context_length=args.context_length,
        api_key=args.api_key,
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_with(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
