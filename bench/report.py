"""Presenting a benchmark run: a table for the terminal, and a plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

JSON_NAME = "bench.json"
PNG_NAME = "bench.png"

#: Per scenario: (label, the queue's figure, the baseline's figure, unit), as paths into its figures.
_PAIRS: dict[str, list[tuple[str, str, str | None, str]]] = {
    "emulator": [("direct tokens/s, flat out", "tokens_per_s", None, "tok/s")],
    "pickup": [
        ("enqueue to running, p50", "pickup.p50_ms", "baseline_pubsub_hop.p50_ms", "ms"),
        ("enqueue to running, p99", "pickup.p99_ms", "baseline_pubsub_hop.p99_ms", "ms"),
    ],
    "ttft": [
        ("time to first token, p50", "queue.p50_ms", "direct.p50_ms", "ms"),
        ("time to first token, p99", "queue.p99_ms", "direct.p99_ms", "ms"),
    ],
    "paced": [
        ("tokens/s", "queue_tokens_per_s", "direct_tokens_per_s", "tok/s"),
        (
            "token delay, p50, all running",
            "delay_queue.p50_ms",
            "delay_direct.p50_ms",
            "ms",
        ),
        (
            "token delay, p99, all running",
            "delay_queue.p99_ms",
            "delay_direct.p99_ms",
            "ms",
        ),
        (
            "token delay, p99, with the start",
            "delay_queue_with_start.p99_ms",
            "delay_direct_with_start.p99_ms",
            "ms",
        ),
        ("worker CPU per token", "worker_cpu_us_per_token", None, "us"),
    ],
    "flat_out": [
        ("tokens/s delivered", "tokens_per_s", "direct_tokens_per_s", "tok/s"),
        ("worker capacity (1 / CPU per token)", "worker_capacity_tokens_per_s", None, "tok/s"),
    ],
    "memory": [("worker RSS, peak", "peak_rss_mib", "idle_rss_mib", "MiB")],
    "gateway": [
        ("SSE time to first token, p50 (vs producer)", "gateway_ttft_p50_ms", "producer_ttft_p50_ms", "ms"),
        ("CPU per delivered event, live, flat out", "cpu_us_per_event", None, "us"),
        ("CPU per delivered event, live, paced", "paced_cpu_us_per_event", None, "us"),
    ],
    "agent_call": [
        ("generate_response, short answer, p50", "queue_p50_ms", "direct_p50_ms", "ms"),
        ("generate_response, short answer, p99", "queue_p99_ms", "direct_p99_ms", "ms"),
    ],
}


def _get(figures: dict[str, Any], path: str) -> float:
    value: Any = figures
    for part in path.split("."):
        value = value[part]
    return float(value)


def _number(value: float, unit: str) -> str:
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"
    return f"{text} {unit}"


def table(results: dict[str, Any]) -> str:
    """Figures against their baselines, then every target and whether it was met."""
    rows = [("scenario", "figure", "arkq", "baseline", "ratio")]
    for name, outcome in results["scenarios"].items():
        for label, value_path, base_path, unit in _PAIRS.get(name, []):
            value = _get(outcome["figures"], value_path)
            base = _get(outcome["figures"], base_path) if base_path else None
            rows.append(
                (
                    name,
                    label,
                    _number(value, unit),
                    "" if base is None else _number(base, unit),
                    "" if not base else f"{value / base:.2f}x",
                )
            )
        if name == "scaling":
            for point in outcome["figures"]["by_workers"]:
                rows.append(
                    (
                        name,
                        f"{point['workers']} workers, tokens/s",
                        _number(point["tokens_per_s"], "tok/s"),
                        "",
                        "",
                    )
                )
            for point in outcome["figures"]["by_streams"]:
                rows.append(
                    (
                        name,
                        f"{point['streams']} streams, tokens/s (worker us/token)",
                        _number(point["tokens_per_s"], f"tok/s ({point['worker_cpu_us_per_token']:.1f})"),
                        _number(point["direct_tokens_per_s"], "tok/s"),
                        f"{point['tokens_per_s'] / point['direct_tokens_per_s']:.2f}x",
                    )
                )
    targets = [("scenario", "target", "measured", "limit", "met")]
    for name, outcome in results["scenarios"].items():
        for check in outcome["checks"]:
            bound = ">=" if check["at_least"] else "<="
            targets.append(
                (
                    name,
                    check["what"],
                    _number(check["value"], check["unit"]),
                    f"{bound} {_number(check['limit'], check['unit'])}",
                    "yes" if check["met"] else "NO",
                )
            )
    return f"{_format(rows)}\n\n{_format(targets)}"


def _format(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def missed(results: dict[str, Any]) -> list[str]:
    return [
        f"{name}: {check['what']}"
        for name, outcome in results["scenarios"].items()
        for check in outcome["checks"]
        if not check["met"]
    ]


def plot(results: dict[str, Any], path: Path) -> bool:
    """Draw the scaling and latency figures into `path`; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = results["scenarios"]
    figure, axes = plt.subplots(3, 2, figsize=(12, 13))
    (throughput, cost), (workers, delays), (gpu_cost, short) = axes
    if "scaling" in scenarios:
        by_streams = scenarios["scaling"]["figures"]["by_streams"]
        streams = [point["streams"] for point in by_streams]
        queue_rate = [point["tokens_per_s"] for point in by_streams]
        throughput.plot(streams, queue_rate, "o-", label="through arkq (1 worker)")
        throughput.plot(streams, [p["direct_tokens_per_s"] for p in by_streams], "s--", label="direct")
        throughput.set(xlabel="concurrent streams", ylabel="tokens/s", title="Flat out")
        throughput.set_ylim(bottom=0)
        throughput.legend()
        cost.plot(streams, [p["worker_cpu_us_per_token"] for p in by_streams], "o-", label="worker")
        cost.plot(streams, [p["emulator_cpu_us_per_token"] for p in by_streams], "^-", label="emulator")
        cost.plot(streams, [p["redis_cpu_us_per_token"] for p in by_streams], "v-", label="redis-server")
        cost.axhline(1e6 / 30_000, color="red", linestyle=":", label="worker target (33 us)")
        cost.set(xlabel="concurrent streams", ylabel="CPU us per token", title="CPU per token, flat out")
        cost.set_ylim(bottom=0)
        for axis in (throughput, cost):
            axis.set_xscale("log", base=2)
            axis.set_xticks(streams, [str(s) for s in streams])
            axis.minorticks_off()
        cost.legend()
        by_workers = scenarios["scaling"]["figures"]["by_workers"]
        counts = [point["workers"] for point in by_workers]
        workers.bar([str(c) for c in counts], [p["tokens_per_s"] for p in by_workers])
        workers.set(xlabel="worker processes", ylabel="tokens/s", title="Throughput by workers, flat out")
    if "paced" in scenarios:
        paced = scenarios["paced"]["figures"]
        quantiles = list(range(1, 100))
        for route, style in (("queue", "-"), ("direct", "--")):
            delays.plot(paced["delay_cdf_ms"][route], quantiles, style, label=route)
        delays.set(
            xlabel="token delay, server write to client (ms)",
            ylabel="percentile",
            title=f"Token delay, {paced['streams']} streams of {paced['tokens_per_stream_per_s']:.0f} tok/s",
        )
        delays.legend()
    if "gpu_pace" in scenarios:
        _plot_gpu_pace(gpu_cost, scenarios["gpu_pace"]["figures"])
    if "short_jobs" in scenarios:
        _plot_short_jobs(short, scenarios["short_jobs"]["figures"])
    machine = results["machine"]
    figure.suptitle(f"arkq bench, {results['date'][:10]}: {machine['cpus']} x {machine['cpu']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _spread_bar(axis: Any, position: float, spread: dict[str, float], label: str, color: str) -> None:
    """A bar at the median, with the rounds' min and max as its error bar."""
    median = spread["median"]
    low, high = median - spread["min"], spread["max"] - median
    axis.bar(position, median, width=0.35, yerr=[[low], [high]], capsize=4, label=label, color=color)


def _plot_gpu_pace(axis: Any, figures: dict[str, Any]) -> None:
    """Worker and Redis CPU per token at a GPU's pace, by streams, against the worker's target."""
    sizes = sorted(int(name.removeprefix("streams_")) for name in figures if name.startswith("streams_"))
    series = (("worker_cpu_us_per_token", "worker", "C0"), ("redis_cpu_us_per_token", "redis-server", "C2"))
    for offset, (figure, label, color) in enumerate(series):
        for index, size in enumerate(sizes):
            spread = figures[f"streams_{size}"][figure]
            _spread_bar(axis, index + offset * 0.38, spread, label if index == 0 else "_", color)
    axis.axhline(30, color="red", linestyle=":", label="worker target (30 us)")
    axis.set_xticks([index + 0.19 for index in range(len(sizes))], [f"{size} streams" for size in sizes])
    axis.set(ylabel="CPU us per token", title="At a GPU's pace (decode clock), min / median / max")
    axis.legend()


def _plot_short_jobs(axis: Any, figures: dict[str, Any]) -> None:
    """One-token jobs per worker CPU-second against the target, and direct requests per second."""
    _spread_bar(axis, 0, figures["jobs_per_cpu_s"], "through arkq, per worker CPU-second", "C0")
    direct = figures["direct_requests_per_s"]
    axis.bar(0.4, direct, width=0.35, label="direct requests per second", color="C1")
    axis.axhline(1500, color="red", linestyle=":", label="target (1,500)")
    axis.set_ylim(0, max(1500, direct, figures["jobs_per_cpu_s"]["max"]) * 1.3)
    axis.set_xticks([0.2], [f"{figures['jobs']} one-token jobs"])
    axis.set(ylabel="jobs per second", title="Short jobs, one worker")
    axis.legend()
