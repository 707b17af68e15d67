"""`arkq bench`: start the stack, run the scenarios, print a table, write JSON and a plot."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from arkq.heap import freeze_loaded
from bench import report
from bench.scenarios import FULL, QUICK, SCENARIOS, Bench, Plan
from bench.stack import Stack
from config_module.loader import load_config
from model_module import ArkModelLink
from producer import Producer


def run_with(args: argparse.Namespace) -> int:
    unknown = sorted(set(args.only or ()) - set(SCENARIOS))
    if unknown:
        print(
            f"arkq bench: no scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
            file=sys.stderr,
        )
        return 2  # the `arkq` usage error
    results = run(QUICK if args.quick else FULL, args.only or list(SCENARIOS), args.out)
    print(report.table(results))
    written = [args.out / report.JSON_NAME] + ([args.out / report.PNG_NAME] if results["plot"] else [])
    print(f"\nwritten: {', '.join(map(str, written))}")
    missed = report.missed(results)
    if missed:
        print(f"targets missed: {'; '.join(missed)}")
    return 0


def run(plan: Plan, names: Sequence[str], out: Path) -> dict[str, Any]:
    """Run the named scenarios on a fresh stack; write the results to `out` and return them."""
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "plan": dataclasses.asdict(plan),
    }
    with tempfile.TemporaryDirectory(prefix="arkq-bench-") as directory, Stack(Path(directory)) as stack:
        stack.workers(1)
        results["scenarios"] = asyncio.run(measure(stack, plan, names))
    (out / report.JSON_NAME).write_text(json.dumps(results, indent=2) + "\n")
    results["plot"] = report.plot(results, out / report.PNG_NAME)
    return results


async def measure(stack: Stack, plan: Plan, names: Sequence[str]) -> dict[str, Any]:
    config = load_config({"ARK_REDIS__URL": stack.redis_url})
    link = ArkModelLink(base_url=stack.llm_url, max_tokens=16, temperature=0.0)
    outcomes = {}
    async with Producer(config=config) as producer, link:
        bench = Bench(stack, producer, link, plan)
        for name in names:
            print(f"running {name}...", file=sys.stderr, flush=True)
            # This client's imports and what earlier scenarios kept, frozen as a worker's start-up is: its
            # own full collections were most of both paths' p99 at 512 streams.
            freeze_loaded()
            outcome = await SCENARIOS[name](bench)
            outcomes[name] = {"figures": outcome.figures, "checks": [c.as_dict() for c in outcome.checks]}
    return outcomes


def machine() -> dict[str, Any]:
    """What the figures were measured on: they mean little without it."""
    cpuinfo, meminfo = _read("/proc/cpuinfo").splitlines(), _read("/proc/meminfo").splitlines()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "")
    memory_kib = next((int(line.split()[1]) for line in meminfo if line.startswith("MemTotal")), 0)
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu": model or platform.processor(),
        "cpus": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "redis_server": redis.stdout.strip(),
        "arkq": version("arkq"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
