"""The Dockerfile: hadolint, its layers, and what `pip install .` of its build context provides."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.helpers import DOCKERFILE, ROOT, compose_config, tool

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = ("arkq", "cli", "config_module", "fake_llm", "gateway", "model_module", "producer", "worker")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def test_hadolint_finds_nothing() -> None:
    done = subprocess.run(
        [str(tool("hadolint")), "--failure-threshold", "warning", "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "", done.stdout  # not even info or style remarks


def test_slim_python_base_and_a_non_root_user() -> None:
    steps = instructions()
    assert [args for keyword, args in steps if keyword == "FROM"] == ["python:3.11-slim"]
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert re.search(r"useradd .*--uid 10001", DOCKERFILE.read_text())


def test_dependencies_are_a_layer_of_their_own_before_the_source() -> None:
    steps = instructions()
    copies = [i for i, (keyword, _) in enumerate(steps) if keyword == "COPY"]
    first_copy, source_copy = copies[0], copies[-1]
    assert steps[first_copy][1] == "pyproject.toml ./", "only pyproject.toml before the dependencies"
    installs = [i for i, (keyword, args) in enumerate(steps) if keyword == "RUN" and "pip install" in args]
    deps, project = installs
    assert first_copy < deps < source_copy < project
    assert "-r /tmp/requirements.txt" in steps[deps][1]
    assert re.search(r"pip install --no-cache-dir --no-deps \.( |$)", steps[project][1])
    commands = " ".join(args for keyword, args in steps if keyword == "RUN")
    assert "[dev]" not in commands and " -e " not in commands and "--editable" not in commands


def test_the_dependency_layer_installs_exactly_the_runtime_dependencies() -> None:
    """Runs the Dockerfile's own extraction command on pyproject.toml."""
    [code] = re.findall(r'python -c "(.*?)"', DOCKERFILE.read_text())
    done = subprocess.run(
        ["sh", "-c", f'python -c "{code}"'],
        cwd=ROOT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == PYPROJECT["project"]["dependencies"]
    dev = PYPROJECT["project"]["optional-dependencies"]["dev"]
    assert not set(done.stdout.splitlines()) & set(dev)


def test_config_yaml_is_where_ark_config_points() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"\bARK_CONFIG=/app/config\.yaml\b", text)
    assert "cp config.yaml /app/config.yaml" in text
    steps = instructions()
    assert ("CMD", '["arq", "worker.WorkerSettings"]') in steps
    assert steps[-1][0] == "CMD"
    # The compose file's arkq services run the image's commands.
    everything = compose_config("*")["services"]
    assert everything["worker"]["command"][0] == "arq"
    assert everything["fake-llm"]["command"][0] == "arkq"


# -- the build context and `pip install .` ---------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "the matcher below does not do exceptions"
    return patterns


def ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule, for the patterns used here: a path is left out when it, or a folder
    above it, matches a pattern (`**/` matches any depth)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def build_context(destination: Path) -> Path:
    """A copy of what `docker build .` sends: the project minus what .dockerignore leaves out."""
    patterns = dockerignore_patterns()

    def skip(directory: str, names: list[str]) -> set[str]:
        relative = Path(directory).relative_to(ROOT)
        return {n for n in names if ignored(str(relative / n).removeprefix("./"), patterns)}

    shutil.copytree(ROOT, destination, ignore=skip, symlinks=True)
    return destination


def test_dockerignore_keeps_secrets_and_local_state_out_and_the_build_inputs_in() -> None:
    patterns = dockerignore_patterns()
    for out in (
        *(".git", ".venv", ".env", ".env.local", "tests/unit/test_config.py", "bench", "arkq.egg-info"),
        *("docs/console.png", "artifacts/console/queue.png", "monitoring/prometheus.yml"),
    ):
        assert ignored(out, patterns), out
    assert ignored("arkq/__pycache__/cli.cpython-311.pyc", patterns)
    for needed in ("pyproject.toml", "README.md", "config.yaml", *(f"{p}/__init__.py" for p in PACKAGES)):
        assert not ignored(needed, patterns), needed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install --no-deps .` of the build context, as the image's last layer does, into a folder
    (the dependencies are those of this environment, which the image's first layer mirrors)."""
    context = build_context(tmp_path_factory.mktemp("context") / "context")
    target = tmp_path_factory.mktemp("site")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-compile",
            "--target",
            target,
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return target


def run_installed(
    site: Path, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A command run outside the checkout, with the installed copy first on the import path."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ARK_")}
    environ.update(PYTHONPATH=str(site), **(env or {}))
    return subprocess.run(
        list(argv), cwd=site.parent, env=environ, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_install_holds_the_packages_and_the_arkq_command(installed: Path) -> None:
    top = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {*PACKAGES, "bin"}, "no tests, sglang/ or other checkout files in the image"
    script = installed / "bin" / "arkq"
    assert script.exists() and "cli.main" in script.read_text()
    for argv in (["worker", "--help"], ["fake-llm", "--help"]):
        done = run_installed(installed, sys.executable, str(script), *argv)
        assert done.returncode == 0, done.stderr
    assert "--host" in done.stdout  # `arkq fake-llm --host 0.0.0.0` (the cpu profile)


def test_the_install_ships_the_web_console_and_the_gateway_serves_it(installed: Path) -> None:
    """The console's files are package data: a non-editable install must carry them, and its gateway
    find them (outside the checkout, with the installed copy first on the import path)."""
    assert (installed / "gateway" / "console" / "index.html").is_file()
    code = (
        "import gateway, starlette.testclient as t; from gateway import create_app;"
        "c = t.TestClient(create_app()); r = c.get('/'); print(gateway.__file__, r.status_code,"
        " r.headers['content-security-policy'])"
    )
    done = run_installed(installed, sys.executable, "-c", code)
    assert done.returncode == 0, done.stderr
    where, status, policy = done.stdout.split(" ", 2)
    assert where.startswith(str(installed)) and status == "200" and "default-src 'self'" in policy


def test_arq_finds_the_worker_settings_in_the_install(installed: Path) -> None:
    """`arq worker.WorkerSettings` imports it by name: from the installed package, not the checkout."""
    assert shutil.which("arq", path=str(Path(sys.executable).parent)), "the arq dependency's command"
    code = (
        "import sys; from arq.utils import import_string; import worker;"
        "settings = import_string('worker.WorkerSettings');"
        "print(worker.__file__); print(settings.functions[0].name)"
    )
    done = run_installed(installed, sys.executable, "-c", code, env={"ARK_CONFIG": str(ROOT / "config.yaml")})
    assert done.returncode == 0, done.stderr
    location, function = done.stdout.split()
    assert Path(location).is_relative_to(installed)
    assert function == "generate"


def test_the_installed_loader_needs_ark_config_to_find_config_yaml(installed: Path) -> None:
    code = (
        "from config_module.loader import config_path;"
        "import os; print(config_path(os.environ)); print(config_path({}))"
    )
    done = run_installed(installed, sys.executable, "-c", code, env={"ARK_CONFIG": str(ROOT / "config.yaml")})
    assert done.returncode == 0, done.stderr
    with_variable, without = done.stdout.splitlines()
    assert with_variable == str(ROOT / "config.yaml")
    assert without == "None", "config.yaml is not installed with the package: the image sets ARK_CONFIG"
