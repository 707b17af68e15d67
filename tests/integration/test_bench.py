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
        timeout=300,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr + ran.stdout
    results = json.loads((out / "bench.json").read_text())
    assert list(results["scenarios"]) == list(SCENARIOS)
    assert results["machine"]["cpus"] >= 1 and results["machine"]["redis_server"].startswith("Redis server")
    checks = [check for outcome in results["scenarios"].values() for check in outcome["checks"]]
    assert {check["what"] for check in checks} >= {
        "pickup p50",
        "worker CPU per token",
        "worker peak RSS",
        "gateway added time to first token, p50",
        "gateway CPU per delivered event (live, flat out)",
        "added time of one generate_response, p50 (short answer)",
    }
    for check in checks:
        assert math.isfinite(check["value"]) and check["met"] in (True, False)
        assert check["what"] in ran.stdout  # every target is in the printed table
    scaling = results["scenarios"]["scaling"]["figures"]
    assert [point["workers"] for point in scaling["by_workers"]] == [1, 2]
    assert all(point["tokens_per_s"] > 0 for point in scaling["by_workers"] + scaling["by_streams"])
    # The gateway's figures are medians of three rounds, each with every SSE reader served in full.
    gateway = results["scenarios"]["gateway"]["figures"]
    assert len(gateway["rounds"]) == 3 and gateway["sse_readers"] == 16
    for figures in gateway["rounds"]:
        assert figures["events"] == figures["paced_events"] >= 16 * 20
        assert figures["cpu_us_per_event"] >= 0 and figures["paced_cpu_us_per_event"] >= 0
        assert figures["producer_ttft_p50_ms"] > 0 and figures["gateway_ttft_p50_ms"] > 0
    assert "SSE time to first token" in ran.stdout
    # An agent's call through the queue against the direct link: the median of three rounds.
    agent_call = results["scenarios"]["agent_call"]["figures"]
    assert len(agent_call["rounds"]) == 3 and agent_call["calls_per_round"] == 5
    assert all(r["direct_p50_ms"] > 0 and r["queue_p50_ms"] > 0 for r in agent_call["rounds"])
    assert "generate_response, short answer, p50" in ran.stdout
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
