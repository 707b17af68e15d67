"""`arkq serve`: the HTTP gateway (`gateway`), on uvicorn."""

from __future__ import annotations

import argparse

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
    uvicorn.run(
        create_app(config), host=settings.host, port=settings.port, log_level="info", access_log=False
    )
    return 0
