"""Cluster scale: dispatch throughput with a thousand simulated workers across ten regions.

Real master and region daemons (``running_cluster``, regions without worker processes) on the
measured ledger; the workers are simulated in this process (``fleet``), each on its own
``WorkerLink`` stream. The same no-op throughput measurement as the 4-worker baseline, with the
same number of runs spread evenly over the regions, and the regions' resident memory idle
(workers connected) and at their peak while the runs go through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmesh.bench import scenarios
from taskmesh.bench.cluster import ClusterShape, daemon_pids, running_cluster
from taskmesh.bench.fleet import simulated_workers
from taskmesh.bench.load import Submitter
from taskmesh.bench.memory import PeakSampler, rss_mib
from taskmesh.common.ledger.benchmarks import BenchmarkLedger

WARM_UP_TAG = "cluster-warm-up"
TAG = "cluster"

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ClusterScale:
    """How large the simulated cluster is, and how many runs go through it."""

    regions: int = 10
    workers: int = 1000  # in all, spread evenly over the regions
    slots: int = 2
    runs: int = 20_000

    def region_names(self) -> tuple[str, ...]:
        """``r01``, ``r02``, ..."""
        return tuple(f"r{index:02d}" for index in range(1, self.regions + 1))

    @property
    def per_region(self) -> int:
        """Simulated workers per region (at least one)."""
        return max(1, self.workers // self.regions)


async def cluster_scale(
    scale: ClusterScale,
    base: ClusterShape,
    *,
    url: str,
    work_dir: Path,
    ledger: BenchmarkLedger,
    progress: Progress,
) -> dict[str, Any]:
    """Throughput and region memory of ``scale``'s cluster (figures as ``throughput``'s)."""
    names = scale.region_names()
    shape = ClusterShape(
        regions=names,
        workers_per_region=0,
        capacity=base.capacity,
        dispatch_interval=base.dispatch_interval,
    )
    progress(f"cluster: starting master and {len(names)} regions")
    async with running_cluster(shape, url, work_dir, "scale") as cluster:
        addresses = {name: cluster.regions[name].addresses["grpc"] for name in names}
        assert cluster.master is not None
        master = cluster.master.addresses
        progress(f"cluster: connecting {scale.per_region * len(names):,} simulated workers")
        async with (
            simulated_workers(addresses, scale.per_region, scale.slots) as workers,
            Submitter(master["grpc"], f"http://{master['http']}") as submitter,
        ):
            target = scenarios.Target(submitter, ledger, names)
            await scenarios.warm_up(target, WARM_UP_TAG, len(names))
            regions = {name: pid for name, pid in daemon_pids(cluster).items() if name != "master"}
            idle = rss_mib(regions)
            progress(f"cluster: {scale.runs:,} no-op runs through {workers:,} workers")
            async with PeakSampler(regions).sampling() as sampler:
                result = await scenarios.throughput(target, scale.runs, TAG)
    return {
        "regions": len(names),
        "workers": workers,
        "slots_per_worker": scale.slots,
        "throughput": result,
        "region_rss_mib": {"idle": idle, "peak": sampler.peaks},
    }
