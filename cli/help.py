"""What every `arkq COMMAND --help` shows beyond its options: their defaults, its exit codes and the
`ARK_*` variables it reads."""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import textwrap
from pathlib import Path

from cli import exit_codes


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's lines as written, and adds `(default: ...)` to every option that has a
    default worth showing (not None, not a flag's False) and whose help does not name one already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            default is None
            or default is False
            or default is argparse.SUPPRESS
            or "default" in text
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


#: The settings each kind of command reads, as `ARK_*` variables (`ARK_SECTION__KEY`).
REDIS_ENV = "ARK_REDIS__URL, ARK_REDIS__PASSWORD, ARK_REDIS__CONNECT_TIMEOUT_S, ARK_REDIS__*"
JOBS_ENV = (
    f"{REDIS_ENV}, ARK_QUEUE__*, ARK_STREAMING__*, ARK_WORKER__KEEP_RESULT_S, ARK_WORKER__JOB_TIMEOUT_S"
)
WORKER_ENV = (
    f"{REDIS_ENV}, ARK_LLM__* (ARK_LLM__BASE_URL, ARK_LLM__API_KEY, ...), ARK_WORKER__*, ARK_QUEUE__*, "
    "ARK_STREAMING__*"
)
GATEWAY_ENV = f"ARK_GATEWAY__* (ARK_GATEWAY__API_KEYS, ...), {JOBS_ENV}, ARK_LLM__MODEL_NAME"
LLM_ENV = "ARK_LLM__BASE_URL, ARK_LLM__API_KEY, ARK_LLM__MODEL_NAME, ARK_LLM__CONNECT_TIMEOUT_S"


def epilog(codes: tuple[int, ...], env: str | None, *, before: str = "") -> str:
    """A command's epilog: `before` (free text), its exit codes, and the environment it reads."""
    parts = [before.strip("\n")] if before else []
    parts.append(exit_codes.describe(*codes))
    if env is None:
        parts.append("environment: reads no ARK_* variable")
    else:
        names = textwrap.fill(f"ARK_CONFIG, {env}", width=100, initial_indent="  ", subsequent_indent="  ")
        parts.append(f"environment (each overrides the YAML file; ARK_CONFIG names that file):\n{names}")
    return "\n\n".join(parts)


def fake_llm_directives() -> str:
    """The emulator's pacings and directives, as its package docstring documents them (from "Pacing")."""
    doc = importlib.import_module("fake_llm").__doc__ or ""
    start = doc.find("Pacing\n")
    return doc[start:].strip() if start >= 0 else ""


def bench_scenarios() -> list[str]:
    """The names in `bench.scenarios.SCENARIOS`, read from its source: importing the benchmark (aiohttp,
    the LLM client) for every `arkq` command would cost more than half a second. Empty where the
    benchmark is not installed (the image)."""
    spec = importlib.util.find_spec("bench")
    if spec is None or not spec.submodule_search_locations:
        return []
    for folder in spec.submodule_search_locations:
        try:
            tree = ast.parse(Path(folder, "scenarios.py").read_text(encoding="utf-8"))
        except OSError:
            continue
        for node in tree.body:
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == "SCENARIOS"
                and isinstance(node.value, ast.Dict)
            ):
                return [str(key.value) for key in node.value.keys if isinstance(key, ast.Constant)]
    return []
