"""``python -m fake_llm`` as a separate process, queried over plain HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.waiting import wait_until

pytestmark = pytest.mark.integration  # starts `python -m fake_llm` as a process

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status, response.read()


def test_module_entry_point_serves_health_and_models() -> None:
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fake_llm",
            "--port",
            str(port),
            "--model",
            "demo",
            "--context-length",
            "4096",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    health: list[tuple[int, bytes]] = []

    def answers() -> bool:
        try:
            health.append(get(f"{base}/health"))
            return True
        except (urllib.error.URLError, ConnectionError):
            assert process.poll() is None, process.communicate()[0].decode()
            return False

    try:
        wait_until(answers, 15, "the emulator's /health")
        assert health == [(200, b"")]

        status, body = get(f"{base}/v1/models")
        models = json.loads(body)
        assert status == 200
        assert models["object"] == "list"
        assert [(m["id"], m["object"], m["max_model_len"]) for m in models["data"]] == [
            ("demo", "model", 4096)
        ]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output = process.communicate(timeout=10)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()
            output = process.communicate()[0].decode()
    assert process.returncode == 0, output
    assert f"on http://127.0.0.1:{port}" in output
