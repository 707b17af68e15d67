"""The web console: the pages the gateway serves at `/` and `/jobs/{id}`, and the status they poll."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
