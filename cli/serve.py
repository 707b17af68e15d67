"""`arkq serve`: the HTTP gateway (`gateway`), on uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket

from arkq.errors import ConfigError
from arkq.heap import freeze_loaded
from arkq.logs import LogFormat, use_format
from config_module import loader


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to listen on (default: gateway.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: gateway.port, 8080)")
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without API keys on a non-loopback address (anyone who reaches it can run jobs)",
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import create_app
    from gateway.auth import Keys, refuse_open_door

    config = loader.config
    settings = config.gateway.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    config = config.model_copy(update={"gateway": settings})
    refuse_open_door(settings.host, Keys(settings.api_keys), insecure_no_auth=args.insecure_no_auth)
    # Bound here, not by uvicorn, which turns a busy port into a log line and an exit code of its own.
    sock = listening_socket(settings.host, settings.port)
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config), host=settings.host, port=settings.port, log_level="info", access_log=False
        )
    )
    gateway_logs(settings.log_format)  # after uvicorn.Config, which sets up uvicorn's logging
    # Here, not in the app's lifespan: an app mounted in someone else's process leaves their heap alone.
    freeze_loaded()
    server.run(sockets=[sock])
    return 0


def gateway_logs(log_format: LogFormat) -> None:
    """The gateway's own lines (`arkq.gateway`) go where uvicorn's go, in `gateway.log_format`."""
    handlers = list(logging.getLogger("uvicorn").handlers)
    ours = logging.getLogger("arkq")
    for handler in handlers:
        if handler not in ours.handlers:
            ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    use_format(handlers, log_format)


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to `host`:`port`; a port in use (or not ours to take) is a bad setting."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise ConfigError(
            f"cannot listen on {host}:{port}: {reason} (is another process on that port? choose one with "
            "--port or gateway.port)"
        ) from None
    return sock
