"""`arkq bench` runs end to end: its own redis-server, emulator and workers, every scenario, its files.

Only that it runs and reports is tested here, at `--quick` sizes; the figures themselves are for
bench/RESULTS.md, never for a test on a shared machine.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

from bench.scenarios import SCENARIOS
from tests.servers import BIN


def test_the_quick_benchmark_runs_every_scenario_and_writes_its_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    ran = subprocess.run(
        [str(BIN / "arkq"), "bench", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr + ran.stdout
    results = json.loads((out / "bench.json").read_text())
    assert list(results["scenarios"]) == list(SCENARIOS)
    assert results["machine"]["cpus"] >= 1 and results["machine"]["redis_server"].startswith("Redis server")
    checks = [check for outcome in results["scenarios"].values() for check in outcome["checks"]]
    assert {check["what"] for check in checks} >= {"pickup p50", "worker CPU per token", "worker peak RSS"}
    for check in checks:
        assert math.isfinite(check["value"]) and check["met"] in (True, False)
        assert check["what"] in ran.stdout  # every target is in the printed table
    scaling = results["scenarios"]["scaling"]["figures"]
    assert [point["workers"] for point in scaling["by_workers"]] == [1, 2]
    assert all(point["tokens_per_s"] > 0 for point in scaling["by_workers"] + scaling["by_streams"])
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
