"""Running the emulator: blocking for the CLI, in-process for tests and benchmarks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Unpack

from aiohttp import web

from arkq.errors import ConfigError

from .app import STATE, AppOptions, create_app
from .batching import describe
from .stats import Stats

__all__ = ["FakeLLMServer", "run", "running_fake_llm"]

# Benchmarks open hundreds of streams at once; the default backlog of 128 would drop SYNs.
_BACKLOG = 2048
# Streams still open at shutdown are cut after this long instead of aiohttp's 60 s.
_SHUTDOWN_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class FakeLLMServer:
    """Handle on an in-process emulator started by :func:`running_fake_llm`."""

    url: str  # http://127.0.0.1:PORT
    base_url: str  # url + "/v1", what OpenAI clients take
    port: int
    stats: Stats  # live counters (the same object the server updates)
    app: web.Application


def run(host: str = "127.0.0.1", port: int = 30000, **options: Unpack[AppOptions]) -> None:
    """Serve until interrupted (SIGINT/SIGTERM); the options are those of :func:`create_app`."""
    app = create_app(**options)
    model, batching = app[STATE].model, app[STATE].batching

    pacing = "per-request pacing" if batching is None else f"batched pacing {describe(batching)}"

    def announce(*_: object) -> None:
        print(
            f"arkq fake LLM serving {model!r} on http://{host}:{port} (OpenAI API at /v1), {pacing}",
            flush=True,
        )

    try:
        web.run_app(
            app,
            host=host,
            port=port,
            access_log=None,
            backlog=_BACKLOG,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
            print=announce,
        )
    except OSError as error:  # the port is another process's (or not ours to take): a bad setting
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason} (is another process on that port? choose one with "
            "--port)"
        ) from None


@asynccontextmanager
async def running_fake_llm(**options: Unpack[AppOptions]) -> AsyncIterator[FakeLLMServer]:
    """Start the emulator on 127.0.0.1 with a free port for the duration of the block; the options are
    those of :func:`create_app`."""
    app = create_app(**options)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=_BACKLOG)
        await site.start()
        port = int(runner.addresses[0][1])
        url = f"http://127.0.0.1:{port}"
        yield FakeLLMServer(url=url, base_url=url + "/v1", port=port, stats=app[STATE].stats, app=app)
    finally:
        await runner.cleanup()
