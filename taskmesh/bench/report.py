"""The benchmark's report: a table on the terminal, JSON, and a PNG of the latency distribution.

matplotlib is optional (``pip install 'taskmesh[bench]'``): only ``--plot`` needs it, so it is
imported there and a missing install is reported before any measuring starts.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskmesh.bench.load import BenchmarkError

Row = tuple[str, str, str, str]

# The targets of issue #8 (this machine, durable ledger).
THROUGHPUT_OF_PROBE = 0.35
PICKUP_P99_MS = {200: 20.0, 1000: 100.0}
IDLE_WORKER_MB = 60.0  # the issue says MB: 10**6 bytes, while RSS is measured in MiB
QUEUED_REGION_MB = 150.0
MB_PER_MIB = 2**20 / 10**6
LEDGER_GROWTH = 1.2  # claim cost at the largest ledger over the baseline
CLUSTER_OF_BASELINE = 0.5  # throughput of the large cluster over the 4-worker one


def check_plotting() -> None:
    """Fail early, with the fix, when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise BenchmarkError(
            "--plot needs matplotlib: pip install 'taskmesh[bench]' (or leave out --plot)"
        )


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def table_rows(results: Mapping[str, Any]) -> list[Row]:
    """(scenario, figure, value, target) for every figure measured."""
    rows: list[Row] = []
    probe = results.get("probe")
    if probe:
        figure = f"claim+complete rows/s (batch {probe['best_batch']})"
        rows.append(("probe", figure, f"{probe['rows_per_second']:,.0f}", ""))
    throughput = results.get("throughput")
    if throughput:
        figure = f"{throughput['runs']:,} no-op runs/s, submit→last succeeded"
        target = ""
        if "throughput_of_probe" in results:
            share = results["throughput_of_probe"]
            target = f"{share:.0%} of probe (≥35%: {_verdict(share >= THROUGHPUT_OF_PROBE)})"
        rows.append(("throughput", figure, f"{throughput['runs_per_second']:,.0f}", target))
    for point in results.get("pickup", []):
        limit = PICKUP_P99_MS.get(point["rate"])
        target = f"p99 ≤ {limit:.0f} ms: {_verdict(point['p99'] <= limit)}" if limit else ""
        figure = f"pickup @{point['rate']}/s (got {point['achieved_rate']:.0f}/s) p50/p99/max"
        if point.get("late"):
            figure += f", {point['late']} stored late"
        value = f"{point['p50']:.0f}/{point['p99']:.0f}/{point['max']:.0f} ms"
        rows.append(("pickup", figure, value, target))
    for mode, figures in results.get("submit", {}).items():
        rows.append(("submit", f"{mode} tasks/s", f"{figures['tasks_per_second']:,.0f}", ""))
    rows += _memory_rows(results.get("memory", {}))
    rows += _cluster_rows(results.get("cluster"))
    rows += _ledger_rows(results.get("ledger"))
    return rows


def _cluster_rows(cluster: Mapping[str, Any] | None) -> list[Row]:
    if not cluster or "throughput" not in cluster:
        return []
    base, scaled = cluster["baseline"], cluster["throughput"]
    share = cluster["of_baseline"]
    target = f"{share:.0%} of baseline (≥50%: {_verdict(share >= CLUSTER_OF_BASELINE)})"
    runs = f"{scaled['runs']:,} no-op runs/s"
    rows: list[Row] = [
        (
            "cluster",
            f"{runs}, {base['workers']} workers",
            f"{base['throughput']['runs_per_second']:,.0f}",
            "baseline",
        ),
        (
            "cluster",
            f"{runs}, {cluster['workers']:,} workers / {cluster['regions']} regions",
            f"{scaled['runs_per_second']:,.0f}",
            target,
        ),
    ]
    for phase in ("idle", "peak"):
        sizes = cluster["region_rss_mib"][phase].values()
        if sizes:
            figure = f"region RSS with {cluster['workers'] // cluster['regions']} workers, {phase}"
            value = f"{max(sizes):.0f} MiB max, {sum(sizes) / len(sizes):.0f} mean"
            rows.append(("cluster", figure, value, ""))
    return rows


def _ledger_rows(ledger: Mapping[str, Any] | None) -> list[Row]:
    if not ledger:
        return []
    rows: list[Row] = []
    claim = f"claim of {ledger['claim_runs']} runs"
    baseline = f"{ledger['baseline_history_runs']:,}"
    for point in ledger["sizes"]:
        figure = f"{claim}, {point['history_runs']:,} finished runs: p50/p90"
        value = f"{point['claim_ms_p50']:.1f}/{point['claim_ms_p90']:.1f} ms"
        rows.append(("ledger", figure, value, f"baseline {point['baseline_claim_ms_p50']:.1f} ms"))
    largest = ledger["sizes"][-1]
    ratio = largest["over_baseline"]
    figure = f"claim cost {largest['history_runs']:,} / {baseline} finished runs"
    target = f"≤ +{LEDGER_GROWTH - 1:.0%}: {_verdict(ratio <= LEDGER_GROWTH)}"
    rows.append(("ledger", figure, f"{ratio - 1:+.0%}", target))
    return rows


def _memory_rows(memory: Mapping[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, mib in memory.get("idle", {}).items():
        target = ""
        if name.startswith("worker"):
            target = _megabytes_target(mib, IDLE_WORKER_MB)
        rows.append(("memory", f"{name} idle RSS", f"{mib:.0f} MiB", target))
    for name, mib in memory.get("peak_during_throughput", {}).items():
        rows.append(("memory", f"{name} peak RSS, throughput", f"{mib:.0f} MiB", ""))
    queued = memory.get("queued")
    if queued:
        for name, mib in queued["rss_mib"].items():
            target = ""
            if name.startswith("region"):
                target = _megabytes_target(mib, QUEUED_REGION_MB)
            figure = f"{name} RSS, {queued['runs']:,} queued"
            rows.append(("memory", figure, f"{mib:.0f} MiB", target))
    return rows


def _megabytes_target(mib: float, limit_mb: float) -> str:
    """The verdict on ``mib`` against a target in MB, with the size in MB shown."""
    mb = mib * MB_PER_MIB
    return f"{mb:.0f} MB ≤ {limit_mb:.0f} MB: {_verdict(mb <= limit_mb)}"


def format_table(rows: Sequence[Row]) -> str:
    """Rows as aligned columns under a header."""
    header: Row = ("scenario", "figure", "value", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    """The whole report as indented JSON."""
    path.write_text(json.dumps(report, indent=2) + "\n")


def write_plot(path: Path, latencies: Mapping[int, Sequence[float]], title: str) -> None:
    """The cumulative distribution of pickup latency at each offered load, as a PNG."""
    import matplotlib  # noqa: PLC0415 - optional, and slow to import

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: PLC0415

    figure, axes = pyplot.subplots(figsize=(8, 4.5), dpi=100)
    for rate, seconds in sorted(latencies.items()):
        ordered = sorted(max(value * 1000, 0.01) for value in seconds)
        if not ordered:
            continue
        shares = [(index + 1) / len(ordered) for index in range(len(ordered))]
        axes.step(ordered, shares, where="post", label=f"{rate} runs/s offered")
    axes.set_xscale("log")
    axes.set_xlabel("pickup latency: due → started on a worker (ms, log scale)")
    axes.set_ylabel("share of runs")
    axes.set_ylim(0, 1.01)
    axes.grid(True, which="both", alpha=0.3)
    axes.set_title(title)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, format="png")
    pyplot.close(figure)
