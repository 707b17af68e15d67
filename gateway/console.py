"""The web console: the pages the gateway serves at `/` and `/jobs/{id}`, and the status they poll.

The pages are plain files shipped inside the package (`gateway/console/`), so there is nothing to build
and nothing to install beyond arkq: every gateway serves the console of its own version. They call the
same API as any client, with the key the user signs in with, and follow a job's events with the
browser's `EventSource` and the job's stream token.

A page shows text that came from a model (and from whoever wrote the prompt), so each one is served
with a Content-Security-Policy that allows only the gateway's own origin: nothing injected into a page
can run a script or send what the page holds anywhere else. The URLs of a page carry stream tokens,
hence `Referrer-Policy: no-referrer`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

#: What a console page may load and reach: its own origin, and nothing else.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: The headers of every console answer, pages and assets alike.
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
#: The files under `gateway/console/` and their media types (nothing else there is served).
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One console file, read once: its bytes, media type and entity tag."""

    body: bytes
    media_type: str
    etag: str

    def response(self, request: Request) -> Response:
        # Revalidated on every load (`no-cache`): after an upgrade a browser gets the new console at
        # once, and until then a 304 costs a few bytes.
        headers = {**SECURITY_HEADERS, "ETag": self.etag, "Cache-Control": "no-cache"}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


@functools.cache
def assets() -> dict[str, Asset]:
    """Every console file, by name: read once, on first use."""
    folder = resources.files(__package__ or "gateway").joinpath("console")
    found = {}
    for entry in folder.iterdir() if folder.is_dir() else ():
        suffix = PurePosixPath(entry.name).suffix
        if entry.is_file() and suffix in MEDIA_TYPES:
            body = entry.read_bytes()
            found[entry.name] = Asset(body, MEDIA_TYPES[suffix], f'"{hashlib.sha256(body).hexdigest()[:32]}"')
    return found


def asset(name: str) -> Asset | None:
    """The console file `name` (a plain file name in `gateway/console/`), or None if there is none."""
    return assets().get(name)


def _page(name: str) -> Asset:
    found = asset(name)
    if found is None:  # the package was installed without its data files: say so, not 404
        raise RuntimeError(f"gateway/console/{name} is missing from the installed package")
    return found


async def home(request: Request) -> Response:
    """The queue view and the playground."""
    return _page("index.html").response(request)


async def job_page(request: Request) -> Response:
    """One job: its events, timings and result. The page reads the job's ID from its own URL, so any
    ID gets the page, and the page says whether the key may see such a job."""
    return _page("job.html").response(request)


async def console_file(request: Request) -> Response:
    found = asset(request.path_params["name"])
    if found is None:
        return Response("not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return found.response(request)


routes: list[BaseRoute] = [
    Route("/", home, methods=["GET"]),
    Route("/jobs/{job_id}", job_page, methods=["GET"]),
    Route("/console/{name}", console_file, methods=["GET"]),
]
