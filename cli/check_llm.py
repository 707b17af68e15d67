"""`arkq check-llm`: is an OpenAI-compatible server answering at `llm.base_url`, with our key?

Workers that start against no server, a wrong URL or a wrong key fail every job they take. This check
asks the server for its models (`GET {llm.base_url}/models`, as SGLang serves it), waits up to `--wait`
seconds for one that is still loading, and says in one line what is wrong and what to do. The compose
file runs it once before the workers start.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time

from arkq.backoff import Backoff
from arkq.errors import ModelError
from cli import exit_codes
from config_module import loader
from model_module import ArkModelLink

#: Between two tries while the server is not answering yet (arkq's one backoff policy).
PATIENCE = Backoff(base_s=0.25, max_s=2.0)
HINTS = (
    "  GPU host:  docker compose --profile gpu up  (or COMPOSE_PROFILES=gpu in .env)\n"
    "  no GPU:    docker compose --profile cpu up  (the SGLang emulator), or `arkq fake-llm`\n"
    "  elsewhere: set ARK_LLM__BASE_URL=http://HOST:30000/v1"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", type=float, default=0.0, help="seconds to keep trying while nothing answers (default: 0)"
    )


def run(args: argparse.Namespace) -> int:
    llm = loader.config.llm
    base = llm.base_url.rstrip("/")
    deadline = time.monotonic() + max(0.0, args.wait)
    tries = 0
    while True:
        try:
            served = asyncio.run(_served_models())
            break
        except ModelError as error:
            if error.kind == "auth":
                print(
                    f"arkq: {base}: refused the API key: set ARK_LLM__API_KEY (LLM_API_KEY) to the "
                    "server's --api-key",
                    file=sys.stderr,
                )
                return exit_codes.USAGE
            if error.kind == "bad_response":  # the server answered, and waiting will not change it
                print(f"arkq: {base}: {error}", file=sys.stderr)
                return exit_codes.USAGE
            problem = str(error)
            if _unresolvable(error):
                deadline = 0.0  # a name that does not resolve will not start answering
        if time.monotonic() >= deadline:
            print(f"arkq: no LLM server answers at {base} ({problem}).\n{HINTS}", file=sys.stderr)
            return exit_codes.LLM_UNREACHABLE
        time.sleep(PATIENCE.delay(tries))
        tries += 1
    print(f"arkq: LLM server at {base} serves {served}")
    if llm.model_name not in served:
        print(
            f"arkq: warning: ARK_LLM__MODEL_NAME={llm.model_name!r} is not among them (LLM_SERVED_MODEL_NAME)"
        )
    return exit_codes.OK


async def _served_models() -> list[str]:
    """The models the server at `llm.base_url` serves, asked as the workers ask (`ArkModelLink`)."""
    async with ArkModelLink() as link:
        return await link.served_models()


def _unresolvable(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
