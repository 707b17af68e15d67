"""`arkq check-llm` against servers that are not the LLM server a worker needs (the compose file's own
use of it, against the emulator, is in tests/deploy/test_fleet.py)."""

from __future__ import annotations

import http.server
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.servers import BIN, ark_env


class _Answers(http.server.BaseHTTPRequestHandler):
    """A web server that is not an OpenAI-compatible one: a login page, a 404, a server loading."""

    def do_GET(self) -> None:
        status, kind, body = {
            "/portal/models": (200, "text/html", b"<html><body>Please log in</body></html>"),
            "/v1/models": (503, "application/json", b'{"object": "error", "message": "loading"}'),
        }.get(self.path, (404, "text/plain", b"not found"))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def web_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def check_llm(base_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = ark_env("redis://127.0.0.1:1/0", base_url)
    return subprocess.run(
        [str(BIN / "arkq"), "check-llm", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_page_that_is_not_a_model_list_is_named_at_once(web_server: str) -> None:
    done = check_llm(f"{web_server}/portal", "--wait", "30")
    assert done.returncode == 2, done.stderr
    assert "text/html" in done.stderr and "Please log in" in done.stderr
    assert "OpenAI-compatible" in done.stderr and "Traceback" not in done.stderr


def test_a_url_without_models_says_so(web_server: str) -> None:
    done = check_llm(f"{web_server}/nothing")
    assert done.returncode == 2 and "HTTP 404" in done.stderr and "/v1" in done.stderr


def test_a_server_still_loading_is_waited_for_then_reported(web_server: str) -> None:
    done = check_llm(f"{web_server}/v1", "--wait", "1")
    assert done.returncode == 7, done.stderr
    assert "no LLM server answers" in done.stderr and "503" in done.stderr
