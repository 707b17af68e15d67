"""``python -m fake_llm`` (and ``arkq fake-llm``): run the SGLang emulator from the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from arkq.errors import ConfigError

from .batching import BatchingConfig
from .server import run

__all__ = ["add_arguments", "build_parser", "main", "run_with"]

DESCRIPTION = "SGLang-compatible OpenAI server emulator with deterministic output and fault injection."

_CURVE = BatchingConfig()  # the defaults of the batched pacing's flags
_CURVE_FLAGS = ("step_ms", "step_ms_per_request", "prefill_ms", "prefill_ms_per_token")


def _milliseconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration in ms (0 or more)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    parser.add_argument("--model", default="tgi", help="served model name (default: %(default)s)")
    parser.add_argument(
        "--pacing",
        choices=("per-request", "batched"),
        default="per-request",
        help="per-request: each request on its own timer (--ttft-ms, --itl-ms); batched: one decode clock "
        "for the server, every running request a token a step, as a GPU (--step-ms, --step-ms-per-request, "
        "--prefill-ms, --prefill-ms-per-token; see Pacing below) (default: %(default)s)",
    )
    parser.add_argument(
        "--ttft-ms", type=_milliseconds, default=0.0, help="per-request pacing: delay before the first token"
    )
    parser.add_argument(
        "--itl-ms", type=_milliseconds, default=0.0, help="per-request pacing: delay between tokens"
    )
    parser.add_argument(
        "--step-ms",
        type=_milliseconds,
        default=None,
        help=f"batched pacing: fixed part of a decode step (default: {_CURVE.step_ms:g})",
    )
    parser.add_argument(
        "--step-ms-per-request",
        type=_milliseconds,
        default=None,
        help="batched pacing: what each running request adds to a step "
        f"(default: {_CURVE.step_ms_per_request:g}; the defaults give "
        f"{_CURVE.step_seconds(1) * 1000:.1f} ms at 1 request, "
        f"{_CURVE.step_seconds(256) * 1000:.1f} at 256, like an 8B model on one H100)",
    )
    parser.add_argument(
        "--prefill-ms",
        type=_milliseconds,
        default=None,
        help=f"batched pacing: fixed part of a prefill batch (default: {_CURVE.prefill_ms:g})",
    )
    parser.add_argument(
        "--prefill-ms-per-token",
        type=_milliseconds,
        default=None,
        help="batched pacing: what each prompt token of a prefill batch adds to it "
        f"(default: {_CURVE.prefill_ms_per_token:g})",
    )
    parser.add_argument("--context-length", type=int, default=32768)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer <key>'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fake_llm", description=DESCRIPTION)
    add_arguments(parser)
    return parser


def batching_of(args: argparse.Namespace) -> BatchingConfig | None:
    """The decode clock's settings from the flags (None: per-request pacing); a flag of the other
    pacing is a usage error rather than silently ignored."""
    curve = {name: getattr(args, name) for name in _CURVE_FLAGS if getattr(args, name) is not None}
    if args.pacing == "per-request":
        if curve:
            flags = ", ".join("--" + name.replace("_", "-") for name in curve)
            raise ConfigError(f"{flags}: only with --pacing batched")
        return None
    if args.ttft_ms or args.itl_ms:
        raise ConfigError(
            "--ttft-ms/--itl-ms pace each request on its own timer: with --pacing batched, use --step-ms, "
            "--step-ms-per-request, --prefill-ms and --prefill-ms-per-token"
        )
    return BatchingConfig(**curve)


def run_with(args: argparse.Namespace) -> None:
    run(
        host=args.host,
        port=args.port,
        model=args.model,
        ttft_ms=args.ttft_ms,
        itl_ms=args.itl_ms,
        context_length=args.context_length,
        api_key=args.api_key,
        batching=batching_of(args),
    )


def main(argv: Sequence[str] | None = None) -> None:
    run_with(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
