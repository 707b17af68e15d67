"""``python -m fake_llm`` as a separate process, queried over plain HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

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
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status, body = get(f"{base}/health")
                break
            except (urllib.error.URLError, ConnectionError):
                assert process.poll() is None, process.communicate()[0].decode()
                assert time.monotonic() < deadline, "emulator did not come up"
                time.sleep(0.05)
        assert (status, body) == (200, b"")

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
