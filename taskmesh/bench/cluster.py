"""The clusters a benchmark measures: ``taskmesh up``'s supervisor, driven in-process.

The ledger is a durable embedded PostgreSQL in the work directory (its default settings:
``fsync`` and ``synchronous_commit`` on), unless a database URL is given. Topologies are
written as files, like an operator's, so the daemons start exactly as under ``taskmesh up``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from taskmesh.common.embedded_postgres import EmbeddedPostgres
from taskmesh.common.topology import load_topology
from taskmesh.local_cluster import LocalCluster

# Far above any benchmark's backlog: admission control is not what is measured.
MAX_PENDING_RUNS = 10_000_000
# A region with no workers: only runs bound to it go there, and they stay queued.
HOLD_REGION = "hold"


@dataclass(frozen=True, slots=True)
class ClusterShape:
    """Regions and workers of a benchmark cluster."""

    regions: tuple[str, ...] = ("eu", "us")
    workers_per_region: int = 2
    slots: int = 16
    capacity: int = 2000
    dispatch_interval: str = "200ms"
    # Runs a region without workers can hold, for measuring memory with a backlog (0: none).
    hold_capacity: int = 0

    def topology(self, database_url: str) -> dict[str, Any]:
        """The topology file's contents, on ``database_url``."""
        workers = {"count": self.workers_per_region, "slots": self.slots}
        regions = [
            {"name": name, "capacity": self.capacity, "workers": workers} for name in self.regions
        ]
        if self.hold_capacity:
            regions.append(
                {"name": HOLD_REGION, "capacity": self.hold_capacity, "workers": {"count": 0}}
            )
        return {
            "ledger": {"url": database_url},
            "master": {
                "dispatch_interval": self.dispatch_interval,
                "max_pending_runs": MAX_PENDING_RUNS,
            },
            "regions": regions,
        }


@contextlib.contextmanager
def ledger_url(database_url: str | None, work_dir: Path) -> Iterator[str]:
    """``database_url``, or a durable embedded PostgreSQL in ``work_dir`` (stopped after)."""
    if database_url:
        yield database_url
        return
    server = EmbeddedPostgres.persistent(work_dir / "ledger")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


def daemon_pids(cluster: LocalCluster) -> dict[str, int]:
    """Each running daemon's process id by name (``master``, ``region-eu``, ``worker-eu-1``)."""
    return {
        child.name: child.process.pid
        for child in cluster.children()
        if child.process is not None and child.process.returncode is None
    }


@contextlib.asynccontextmanager
async def running_cluster(
    shape: ClusterShape, database_url: str, work_dir: Path, name: str
) -> AsyncIterator[LocalCluster]:
    """Every daemon of ``shape`` started and supervised for the block, then stopped."""
    path = work_dir / f"{name}-topology.yaml"
    path.write_text(yaml.safe_dump(shape.topology(database_url), sort_keys=False))
    topology = load_topology(path, environ={})
    cluster = LocalCluster(
        topology, path, database_url, work_dir / f"{name}-logs", work_dir / f"{name}.json"
    )
    await cluster.start()
    supervisor = asyncio.create_task(cluster.supervise(), name=f"supervise-{name}")
    try:
        yield cluster
    finally:
        await cluster.stop()
        await supervisor
