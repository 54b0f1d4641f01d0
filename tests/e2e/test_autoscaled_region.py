"""Autoscaling end to end: a burst grows region eu's worker pool, and it shrinks afterwards.

`taskmesh up` starts the master and region eu with no workers at all; the region's
autoscaling command is tests/e2e/worker_pool.py, which keeps exactly {desired} local
`taskmesh worker` processes (started and stopped by pid). The pool is watched only through
public interfaces: the master's cluster view (gRPC GetCluster) and the region's /metrics.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_harness import RunningCluster, running_cluster
from test_cluster import eventually, wait_all
from worker_pool import running

from taskmesh.common.model import RunState
from taskmesh.common.rpc import cluster_pb2, scheduler_pb2, scheduler_pb2_grpc

POOL_SCRIPT = Path(__file__).with_name("worker_pool.py")
MAX_WORKERS = 3
WAIT = 120.0  # seconds: workers start slowly on a loaded machine
BURST = 6  # runs of `sleep 3`, one slot per worker: the pool goes to its maximum


def autoscaling_topology(database_url: str, pool_dir: Path, topology: Path) -> dict[str, Any]:
    """Region eu: no workers of its own, autoscaling 1..3 one-slot workers, fast cooldown."""
    command = [sys.executable, str(POOL_SCRIPT), "--state", str(pool_dir)]
    command += ["--desired", "{desired}", "--region", "{region}", "--address", "{address}"]
    command += ["--topology", str(topology)]
    autoscaling = {
        "min_workers": 1,
        "max_workers": MAX_WORKERS,
        "target_per_slot": 1,
        "cooldown": "1s",
        "interval": "200ms",
        "command": shlex.join(command),
        "command_timeout": "60s",
    }
    workers = {"count": 0, "slots": 1, "heartbeat_interval": "250ms"}
    return {
        "ledger": {"url": database_url},
        "master": {"dispatch_interval": "200ms"},
        "regions": [
            {
                "name": "eu",
                "worker_heartbeat_timeout": "2s",
                "workers": workers,
                "autoscaling": autoscaling,
            }
        ],
    }


@pytest.fixture(scope="module")
def scaled(
    tmp_path_factory: pytest.TempPathFactory, database_admin: Any, template_database: str
) -> Iterator[tuple[RunningCluster, Path]]:
    """The cluster and the pool script's state directory; every worker stopped at the end."""
    base = tmp_path_factory.mktemp("autoscaling")
    pool_dir = base / "pool"
    pool_dir.mkdir()
    topology = base / "topology.yaml"  # where running_cluster writes it

    def topology_of(database_url: str) -> dict[str, Any]:
        return autoscaling_topology(database_url, pool_dir, topology)

    try:
        with running_cluster(base, database_admin, template_database, topology_of) as cluster:
            yield cluster, pool_dir
    finally:
        stop_pool(pool_dir)


def stop_pool(pool_dir: Path) -> None:
    """SIGTERM the workers the script left running, by the pids it recorded; wait for them."""
    record = pool_dir / "pool.json"
    if not record.exists():
        return
    pids = [worker["pid"] for worker in json.loads(record.read_text())["workers"]]
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while any(running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if running(pid):
            os.kill(pid, signal.SIGKILL)


def workers_up(cluster: RunningCluster) -> int:
    """Region eu's workers taking work, as the master's cluster view shows them."""
    with grpc.insecure_channel(cluster.master) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        view = stub.GetCluster(scheduler_pb2.GetClusterRequest(), timeout=10)
    (eu,) = [region for region in view.regions if region.name == "eu"]
    return sum(1 for worker in eu.workers if worker.state == cluster_pb2.WORKER_STATE_UP)


def desired_workers(cluster: RunningCluster) -> int | None:
    """``taskmesh_region_desired_workers`` on region eu's /metrics."""
    url = f"http://{cluster.state['regions']['eu']['http']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        page = response.read().decode()
    found = re.search(r'^taskmesh_region_desired_workers\{region="eu"\} (\S+)$', page, re.M)
    return None if found is None else int(float(found.group(1)))


def test_a_burst_grows_the_pool_and_it_shrinks_after(scaled: tuple[RunningCluster, Path]) -> None:
    cluster, pool_dir = scaled
    eventually(lambda: workers_up(cluster) == 1, WAIT, "the autoscaler's first worker")
    assert desired_workers(cluster) == 1

    with cluster.client() as client:
        burst = [client.submit("sleep 3", name=f"burst-{i}", region="eu") for i in range(BURST)]
        eventually(lambda: desired_workers(cluster) == MAX_WORKERS, WAIT, "desired = max")
        eventually(lambda: workers_up(cluster) == MAX_WORKERS, WAIT, "the pool at its maximum")
        infos = wait_all(client, [str(task.id) for task in burst], timeout=WAIT)
    assert all(info.latest_run and info.latest_run.state is RunState.SUCCEEDED for info in infos)
    used = {info.latest_run.worker_id for info in infos if info.latest_run}
    assert len(used) > 1, used  # the burst really spread over the grown pool

    eventually(lambda: desired_workers(cluster) == 1, WAIT, "desired back to the minimum")
    eventually(lambda: workers_up(cluster) == 1, WAIT, "the pool back to one worker")
    pool = json.loads((pool_dir / "pool.json").read_text())
    assert len(pool["workers"]) == 1
    assert pool["started"] == MAX_WORKERS
