"""A port another process holds is a bad setting: one line naming the address and what to do, exit 2,
for the emulator and the gateway alike (no traceback, no server-specific exit code)."""

from __future__ import annotations

import socket
import subprocess

import pytest

from cli import exit_codes
from tests.servers import BIN, ark_env


@pytest.mark.parametrize("command", [["fake-llm"], ["serve"]])
def test_a_busy_port_is_one_line_and_exit_2(command: list[str], redis_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run(
            [str(BIN / "arkq"), *command, "--port", str(port)],
            env=ark_env(redis_url, "http://127.0.0.1:9/v1"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert ran.returncode == exit_codes.USAGE, ran.stderr
    assert "Traceback" not in ran.stderr
    [line] = [line for line in ran.stderr.splitlines() if line.startswith("arkq: ")]
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in line and "--port" in line
