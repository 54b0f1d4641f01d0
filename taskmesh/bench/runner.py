"""One benchmark run: the ledger, the probe, a measured cluster, then a cluster holding a backlog.

Order matters on a shared machine: the probe runs first, on the idle PostgreSQL, so the
throughput ratio compares figures of the same run a few minutes apart.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskmesh.bench import scenarios
from taskmesh.bench.cluster import (
    HOLD_REGION,
    ClusterShape,
    daemon_pids,
    ledger_url,
    running_cluster,
)
from taskmesh.bench.cluster_scale import ClusterScale, cluster_scale
from taskmesh.bench.ledger_scale import ledger_scale
from taskmesh.bench.load import (
    BenchmarkError,
    Submitter,
    batches,
    bounded,
    noop_specs,
    workflow_request,
)
from taskmesh.bench.memory import PeakSampler, rss_mib
from taskmesh.bench.report import check_plotting, write_json, write_plot
from taskmesh.common.ledger.benchmarks import BenchmarkLedger
from taskmesh.common.model import RunState
from taskmesh.local_cluster import LocalCluster

SCENARIOS = ("throughput", "pickup", "submit", "probe", "memory", "cluster", "ledger")
WARM_UP_RUNS = 8
IDLE_SETTLE_SECONDS = 1.0
LEDGER_ROWS = (10_000, 1_000_000)


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """What to measure, at which sizes, and where to write the results."""

    scenarios: frozenset[str] = frozenset(SCENARIOS)
    runs: int = 50_000
    rates: tuple[int, ...] = (200, 1000)
    pickup_seconds: float = 10.0
    queued: int = 100_000
    ledger_rows: tuple[int, ...] = LEDGER_ROWS
    claims: int = 50
    cluster: ClusterScale = field(default_factory=ClusterScale)
    shape: ClusterShape = field(default_factory=ClusterShape)
    database_url: str | None = None
    work_dir: Path | None = None
    json_path: Path | None = None
    plot_path: Path | None = None

    def submit_counts(self) -> tuple[int, int]:
        """Tasks for the single and the batched submission figures."""
        return min(5_000, max(10, self.runs // 10)), min(20_000, max(20, self.runs // 5))


def run_bench(options: BenchOptions) -> dict[str, Any]:
    """Measure everything ``options`` asks for; returns the report (also written to files)."""
    if options.plot_path is not None:
        check_plotting()
    work_dir = options.work_dir or _scratch_dir()
    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        with ledger_url(options.database_url, work_dir) as url:
            from taskmesh.common.ledger.migrations import upgrade  # noqa: PLC0415 - slow import

            upgrade(url)
            report, latencies = asyncio.run(_measure(options, url, work_dir))
    finally:
        if options.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    if options.json_path is not None:
        write_json(options.json_path, report)
    if options.plot_path is not None:
        write_plot(options.plot_path, latencies, _plot_title(report))
    return report


def progress(message: str) -> None:
    """One line on stderr, so that a long run shows where it is."""
    print(f"{datetime.now(UTC):%H:%M:%S} bench: {message}", file=sys.stderr, flush=True)


def _scratch_dir() -> Path:
    """A disk-backed temporary directory the PostgreSQL server account can enter."""
    path = Path(tempfile.mkdtemp(prefix="taskmesh-bench-", dir="/var/tmp"))
    path.chmod(0o755)  # under root the server runs as the postgres user
    return path


def _plot_title(report: dict[str, Any]) -> str:
    when = report["started_at"][:16].replace("T", " ")
    return f"taskmesh pickup latency ({report['machine']['cpus']} CPUs, {when} UTC)"


async def _measure(
    options: BenchOptions, url: str, work_dir: Path
) -> tuple[dict[str, Any], dict[int, list[float]]]:
    """Every scenario asked for, in order; the report and the raw pickup latencies."""
    ledger = BenchmarkLedger.connect(url)
    try:
        report: dict[str, Any] = {
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": _machine(),
            "ledger": await ledger.settings(),
            "options": _options_json(options),
        }
        results: dict[str, Any] = {}
        report["results"] = results
        if "probe" in options.scenarios:
            progress("probe: claim-then-complete of bare rows")
            results["probe"] = await scenarios.probe(ledger, options.runs)
        latencies = await _measure_cluster(options, url, work_dir, ledger, results)
        if "probe" in results and "throughput" in results:
            share = results["throughput"]["runs_per_second"] / results["probe"]["rows_per_second"]
            results["throughput_of_probe"] = round(share, 6)
        if "cluster" in options.scenarios:
            await _measure_cluster_scale(options, url, work_dir, ledger, results["cluster"])
        if "ledger" in options.scenarios:  # last: filling millions of rows loads the machine
            results["ledger"] = await ledger_scale(
                url, options.ledger_rows, options.claims, progress
            )
        report["load_average_after"] = list(os.getloadavg())
        return report, latencies
    finally:
        await ledger.close()


async def _measure_cluster(
    options: BenchOptions,
    url: str,
    work_dir: Path,
    ledger: BenchmarkLedger,
    results: dict[str, Any],
) -> dict[int, list[float]]:
    """The scenarios that need the measured cluster (2 regions, 4+ workers)."""
    latencies: dict[int, list[float]] = {}
    wanted = options.scenarios & {"throughput", "pickup", "submit", "memory", "cluster"}
    if not wanted:
        return latencies
    shape = options.shape
    if "memory" in options.scenarios:
        shape = replace(shape, hold_capacity=options.queued)
    progress("starting the cluster")
    async with (
        running_cluster(shape, url, work_dir, "main") as cluster,
        _submitter(cluster) as submitter,
    ):
        target = scenarios.Target(submitter, ledger, options.shape.regions)
        progress("warming up")
        await scenarios.warm_up(target, "warm-up", WARM_UP_RUNS)
        pids = daemon_pids(cluster)
        memory: dict[str, Any] = {}
        if "memory" in options.scenarios:
            await asyncio.sleep(IDLE_SETTLE_SECONDS)
            memory["idle"] = rss_mib(pids)
            results["memory"] = memory
        if "throughput" in options.scenarios:
            progress(f"throughput: {options.runs:,} no-op runs")
            async with PeakSampler(pids).sampling() as sampler:
                results["throughput"] = await scenarios.throughput(target, options.runs)
            memory["peak_during_throughput"] = sampler.peaks
        if "pickup" in options.scenarios:
            results["pickup"] = []
            for rate in options.rates:
                progress(f"pickup: {rate}/s for {options.pickup_seconds:g}s")
                point, seconds = await scenarios.pickup(target, rate, options.pickup_seconds)
                results["pickup"].append(point)
                latencies[rate] = seconds
        if "submit" in options.scenarios:
            progress("submit: single and batched, gRPC and REST")
            results["submit"] = await scenarios.submission(target, *options.submit_counts())
        if "memory" in options.scenarios:
            progress(f"memory: the {HOLD_REGION} region holding {options.queued:,} runs")
            memory["queued"] = await _measure_queued(options, target, pids)
        if "cluster" in options.scenarios:
            runs = options.cluster.runs
            progress(f"cluster: baseline, {runs:,} no-op runs on this cluster")
            baseline = await scenarios.throughput(target, runs, "cluster-baseline")
            workers = len(shape.regions) * shape.workers_per_region
            results["cluster"] = {"baseline": {"workers": workers, "throughput": baseline}}
        progress("stopping the cluster")
    return latencies


async def _measure_cluster_scale(
    options: BenchOptions,
    url: str,
    work_dir: Path,
    ledger: BenchmarkLedger,
    figures: dict[str, Any],
) -> None:
    """The simulated cluster's figures, beside the baseline measured just before."""
    figures.update(
        await cluster_scale(
            options.cluster,
            options.shape,
            url=url,
            work_dir=work_dir,
            ledger=ledger,
            progress=progress,
        )
    )
    baseline = figures["baseline"]["throughput"]["runs_per_second"]
    figures["of_baseline"] = round(figures["throughput"]["runs_per_second"] / baseline, 4)


def _submitter(cluster: LocalCluster) -> Submitter:
    assert cluster.master is not None
    addresses = cluster.master.addresses
    return Submitter(addresses["grpc"], f"http://{addresses['http']}")


async def _measure_queued(
    options: BenchOptions, target: scenarios.Target, pids: dict[str, int]
) -> dict[str, Any]:
    """Master and region memory while a region holds ``queued`` runs it has no worker for."""
    tag = "memory-queued"
    specs = noop_specs(tag, options.queued, (HOLD_REGION,))
    requests = [workflow_request(b) for b in batches(specs, scenarios.BATCH_SIZE)]
    await bounded((target.submitter.submit_workflow(r) for r in requests), 2)
    await _wait_until_delegated(target.ledger, tag, options.queued)
    await asyncio.sleep(IDLE_SETTLE_SECONDS)
    names = ("master", f"region-{HOLD_REGION}")
    return {"runs": options.queued, "rss_mib": rss_mib({n: pids[n] for n in names})}


async def _wait_until_delegated(ledger: BenchmarkLedger, tag: str, count: int) -> None:
    """Return once ``count`` runs of ``tag`` sit in their region's queue."""
    deadline = time.monotonic() + scenarios.finish_timeout(count)
    while True:
        states = await ledger.state_counts(tag)
        if states.get(str(RunState.DELEGATED), 0) >= count:
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"{tag}: the region did not take all {count} runs: {states}")
        await asyncio.sleep(scenarios.POLL_INTERVAL)


def _machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _options_json(options: BenchOptions) -> dict[str, Any]:
    return {
        "scenarios": sorted(options.scenarios),
        "runs": options.runs,
        "rates": list(options.rates),
        "pickup_seconds": options.pickup_seconds,
        "queued": options.queued,
        "cluster": asdict(options.cluster),
        "ledger_rows": list(options.ledger_rows),
        "claims": options.claims,
        "regions": list(options.shape.regions),
        "workers_per_region": options.shape.workers_per_region,
        "slots": options.shape.slots,
        "embedded_ledger": options.database_url is None,
    }
