"""`arkq check-llm`: is an OpenAI-compatible server answering at `llm.base_url`, with our key?

Workers that start against no server, a wrong URL or a wrong key fail every job they take. This check
asks the server for its models (`GET {llm.base_url}/models`, as SGLang serves it), waits up to `--wait`
seconds for one that is still loading, and says in one line what is wrong and what to do. The compose
file runs it once before the workers start.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from typing import Any

import httpx2

from arkq.backoff import Backoff
from arkq.errors import ArkqError
from cli import exit_codes
from config_module import loader

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


class Unusable(ArkqError):
    """The server answered, and waiting will not change its answer."""


def run(args: argparse.Namespace) -> int:
    llm = loader.config.llm
    base = llm.base_url.rstrip("/")
    key = llm.api_key.get_secret_value() if llm.api_key else "-"
    deadline = time.monotonic() + max(0.0, args.wait)
    tries = 0
    while True:
        try:
            served = _served_models(base, key, timeout_s=llm.connect_timeout_s + 5)
            break
        except Unusable as error:
            print(f"arkq: {base}: {error}", file=sys.stderr)
            return exit_codes.USAGE
        except httpx2.HTTPError as error:
            problem = _describe(error)
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


def _served_models(base: str, key: str, *, timeout_s: float) -> list[Any]:
    response = httpx2.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)
    if response.status_code in (401, 403):
        raise Unusable("refused the API key: set ARK_LLM__API_KEY (LLM_API_KEY) to the server's --api-key")
    if response.status_code == 404:
        raise Unusable(
            "no /models here (HTTP 404): does llm.base_url end in /v1 of an OpenAI-compatible server?"
        )
    if response.status_code >= 500:
        raise httpx2.HTTPStatusError(
            f"HTTP {response.status_code}", request=response.request, response=response
        )
    try:
        cards = response.json()["data"]
        return [card["id"] for card in cards]
    except (ValueError, KeyError, TypeError):
        kind = response.headers.get("content-type", "no content type")
        raise Unusable(
            f"answered HTTP {response.status_code} with {kind}, not a model list "
            f"({response.text[:80]!r}): does llm.base_url point at an OpenAI-compatible server?"
        ) from None


def _describe(error: httpx2.HTTPError) -> str:
    cause = error.__cause__ or error.__context__
    detail = str(error) or type(error).__name__
    if cause is not None and str(cause) and str(cause) not in detail:
        detail = f"{detail}: {cause}"
    return detail


def _unresolvable(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
