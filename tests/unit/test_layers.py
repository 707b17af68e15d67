"""The layers point one way, and the light ones stay light.

    arkq.errors → config_module (settings) → arkq (core) → model_module, producer, worker
        → gateway (the HTTP door, on the producer) → cli, bench, fake_llm (tools)

Each package may import only the layers below it (and itself); the producer never imports the worker or
the LLM link; nothing imports the tools on top. Imports inside functions count too; imports for type
checking only (`if TYPE_CHECKING:`) do not.

A few modules are layers of their own (`NODES`), apart from their package: `arkq.errors` sits under
everything, and `model_module.ArkModelNew`, the ARKOS import path, over both links. A module may import
such a node when its own rules name it, or when they name its package and the node imports nothing its
package may not (`arkq.errors` is open to whoever may import `arkq`; `model_module.ArkModelNew`, which
imports the producer, is not open to whoever may import `model_module`).
"""

from __future__ import annotations

import ast
import inspect
import pkgutil
import re
import subprocess
import sys
from importlib import import_module
from pathlib import Path

import pytest

from arkq.errors import ArkqError

ROOT = Path(__file__).resolve().parents[2]
PROJECT = (
    "arkq",
    "config_module",
    "model_module",
    "producer",
    "worker",
    "gateway",
    "cli",
    "bench",
    "fake_llm",
)
#: Modules that are layers of their own, apart from their package (with what is under them).
NODES = ("arkq.errors", "model_module.ArkModelNew")
ALLOWED: dict[str, set[str]] = {
    "arkq.errors": set(),
    "config_module": {"arkq.errors"},
    "arkq": {"arkq", "config_module"},
    "model_module": {"arkq", "config_module"},
    # The ARKOS façade: agents import both links, direct and queued, from the one path they know.
    "model_module.ArkModelNew": {"arkq", "config_module", "model_module", "producer"},
    "producer": {"arkq", "config_module"},
    "worker": {"arkq", "config_module", "model_module"},
    "gateway": {"arkq", "config_module", "producer"},
    "fake_llm": {"arkq.errors"},
    "bench": {"arkq", "config_module", "model_module", "producer", "worker", "gateway", "fake_llm"},
    "cli": {"arkq", "config_module", "model_module", "producer", "worker", "gateway", "fake_llm", "bench"},
}


def _layer(module: str) -> str:
    for node in NODES:
        if module == node or module.startswith(f"{node}."):
            return node
    return module.split(".")[0]


def _may_import(own: str, name: str) -> bool:
    layer = _layer(name)
    if layer == own or layer in ALLOWED[own]:
        return True
    package = layer.split(".")[0]
    # A node is part of its package for importers as long as it imports nothing its package may not.
    below_its_package = ALLOWED[layer] <= ALLOWED[package] | {package}
    return package != layer and package in ALLOWED[own] and below_its_package


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node, except those under `if TYPE_CHECKING:`."""
    nodes, stack = [], [tree]
    while stack:
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))
    return nodes


def _project_imports(path: Path) -> set[str]:
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PROJECT)
    return found


def _modules() -> list[tuple[str, Path]]:
    modules = []
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules.append((dotted, path))
    return modules


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[name for name, _ in _modules()])
def test_imports_point_down_only(module: str, path: Path) -> None:
    own = _layer(module)
    upward = sorted(name for name in _project_imports(path) if not _may_import(own, name))
    assert not upward, f"{module} ({own}) imports {upward}; it may import only {sorted(ALLOWED[own])}"


def _loaded_by(statement: str) -> set[str]:
    """The modules that `python -X importtime -c statement` reports importing."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}


def test_importing_the_producer_loads_no_llm_client_no_arq_and_no_tools() -> None:
    loaded = _loaded_by("import producer")
    heavy = {"openai", "aiohttp", "httpx2", "arq", "arq.worker", "model_module", "worker", "fake_llm"}
    heavy |= {"bench.processes", "cli"}
    assert not loaded & heavy, f"`import producer` loads {sorted(loaded & heavy)}"
    assert {"producer", "arkq.contract", "redis"} <= loaded  # the measurement sees what it should


def test_the_layer_rules_keep_the_arkos_facade_above_both_links() -> None:
    assert _may_import("worker", "arkq.errors") and _may_import("config_module", "arkq.errors")
    assert _may_import("worker", "model_module.link")
    assert not _may_import("worker", "model_module.ArkModelNew"), "it would bring the producer in"
    assert not _may_import("model_module", "producer") and not _may_import("producer", "model_module")
    assert _may_import("model_module.ArkModelNew", "producer.link")
    assert _may_import("model_module.ArkModelNew", "model_module.link")


def test_importing_the_worker_loads_neither_the_emulator_nor_the_process_helpers() -> None:
    loaded = _loaded_by("import worker.settings, worker.job")
    assert not loaded & {"fake_llm", "bench", "bench.processes", "cli"}, sorted(loaded)
    assert "arq.worker" in loaded and "openai" in loaded


def _project_exceptions() -> list[type[BaseException]]:
    classes: dict[str, type[BaseException]] = {}
    for package in PROJECT:
        root = import_module(package)
        names = [package] + [
            info.name
            for info in pkgutil.walk_packages(root.__path__, f"{package}.")
            if "__main__" not in info.name
        ]
        for name in names:
            for _, value in inspect.getmembers(import_module(name), inspect.isclass):
                if issubclass(value, BaseException) and value.__module__.split(".")[0] in PROJECT:
                    classes[f"{value.__module__}.{value.__qualname__}"] = value
    return list(classes.values())


def test_every_exception_is_an_arkq_error_and_no_two_share_a_name() -> None:
    exceptions = _project_exceptions()
    assert len(exceptions) >= 15
    outside = [cls.__qualname__ for cls in exceptions if not issubclass(cls, ArkqError)]
    assert not outside, f"not under ArkqError: {outside}"
    names = [cls.__qualname__ for cls in exceptions]
    assert len(names) == len(set(names)), f"two classes share a name: {sorted(names)}"


def test_the_roots_docstring_draws_every_public_exception() -> None:
    import arkq.errors

    public = [cls for cls in _project_exceptions() if cls.__module__ == "arkq.errors"]
    tree = arkq.errors.__doc__ or ""
    undrawn = [cls.__name__ for cls in public if not re.search(rf"(^|[ ─]){cls.__name__}\b", tree, re.M)]
    assert not undrawn, f"add {undrawn} to the tree in arkq/errors.py"
