"""The benchmark's arithmetic and its table: what the figures in bench/RESULTS.md rest on."""

from __future__ import annotations

import pytest

from bench.load import Stream, percentile, steady_delays, summary_ms
from bench.report import missed, table
from bench.scenarios import Check


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)
    assert percentile([3.0], 0.99) == 3.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def test_summaries_are_in_milliseconds() -> None:
    assert summary_ms([0.001, 0.002, 0.003]) == {"p50_ms": 2.0, "p99_ms": 3.0, "mean_ms": 2.0, "n": 3}


def test_a_check_is_met_on_the_right_side_of_its_limit() -> None:
    assert Check("latency", 1.0, 2.0, "ms").met
    assert not Check("latency", 3.0, 2.0, "ms").met
    assert Check("ratio", 0.97, 0.95, "x", at_least=True).met
    assert not Check("ratio", 0.9, 0.95, "x", at_least=True).met


def test_the_table_shows_figures_with_baselines_and_every_missed_target() -> None:
    results = {
        "scenarios": {
            "pickup": {
                "figures": {
                    "pickup": {"p50_ms": 1.5, "p99_ms": 4.0},
                    "baseline_pubsub_hop": {"p50_ms": 0.1, "p99_ms": 0.2},
                },
                "checks": [
                    Check("pickup p50", 1.5, 2.0, "ms").as_dict(),
                    Check("pickup p99", 12.0, 10.0, "ms").as_dict(),
                ],
            }
        }
    }
    text = table(results)
    assert "enqueue to running, p50" in text and "15.00x" in text
    assert "NO" in text and "yes" in text
    assert missed(results) == ["pickup: pickup p99"]


def test_steady_delays_keep_only_tokens_written_while_every_stream_ran() -> None:
    early = Stream(began=0.0, stamps=[1.0, 2.0, 3.0, 4.0], delays=[0.1, 0.2, 0.3, 0.4])
    late = Stream(began=0.0, stamps=[2.5, 3.5, 5.0], delays=[0.9, 0.8, 0.7])
    # all running from 2.5 (the late one's first) to 4.0 (the early one's last)
    assert sorted(steady_delays([early, late])) == [0.3, 0.4, 0.8, 0.9]
