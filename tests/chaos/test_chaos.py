"""Chaos scenarios against real processes; each ends with the invariant checker.

Work is submitted and watched through the master's gRPC API only; faults are signals to the
daemons' processes and a halt of the ledger server. Every command appends its task's token to
the execution log, which the checker compares with the ledger. Recovery time is the time from
the fault until every run the scenario submitted has finished.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import grpc
import pytest
from chaos_cluster import KIND_FAIL_MAX, ChaosCluster
from chaos_table import ChaosTable
from invariants import InvariantChecker, Report

from taskmesh.common.errors import TaskmeshError
from taskmesh.common.model import DEFAULT_KIND, Placement, RetryPolicy, RunState, TaskSpec
from taskmesh.common.rpc import cluster_pb2, scheduler_pb2, scheduler_pb2_grpc
from taskmesh.common.rpc.tasks import task_spec_to_proto

pytestmark = pytest.mark.slow

BREAKER_OPEN, BREAKER_CLOSED = cluster_pb2.BREAKER_STATE_OPEN, cluster_pb2.BREAKER_STATE_CLOSED
T = TypeVar("T")
TAKEOVER_LINE = "dispatcher: this master now dispatches"
FINISH_TIMEOUT = 240.0  # generous: catches hangs, not slowness
BATCH = 500  # tasks per SubmitWorkflow call


class Scenario:
    """Submits a scenario's tasks, waits for them, and checks and tabulates the outcome."""

    def __init__(
        self, name: str, cluster: ChaosCluster, checker: InvariantChecker, table: ChaosTable
    ) -> None:
        self.name = name
        self.cluster = cluster
        self.checker = checker
        self.table = table
        self.tokens: dict[UUID, str] = {}
        self.fault_at = time.monotonic()
        self.notes = ""  # the scenario's own figures, for the table

    def submit(
        self,
        count: int,
        *,
        seconds: float,
        region: str | None = None,
        placement: Placement | None = None,
        kind: str = DEFAULT_KIND,
        failing_while: Path | None = None,
        retry: RetryPolicy | None = None,
    ) -> list[UUID]:
        """Submit ``count`` one-shot tasks that sleep, then record their execution; their ids.

        They go in as one workflow without dependencies (one transaction per 500 tasks), so a
        region gets a real backlog at once; one ``Submit`` call per task is too slow for that.
        With ``failing_while``, each command fails at once (before it sleeps or records
        anything) while that file exists: a downstream that is down.
        """
        log = shlex.quote(str(self.checker.execution_log))
        guard = (
            ""
            if failing_while is None
            else f"test -e {shlex.quote(str(failing_while))} && exit 1; "
        )
        tokens = [f"{self.name}-{len(self.tokens) + index}" for index in range(count)]
        shape = TaskSpec(name="-", command="-", kind=kind, retry=retry or RetryPolicy())
        task_ids = []
        channel = grpc.insecure_channel(self.cluster.live_master().addresses["grpc"])
        with channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            for start in range(0, count, BATCH):
                batch = tokens[start : start + BATCH]
                specs = [
                    _spec(
                        f"{guard}sleep {seconds}; echo {token} >> {log}",
                        token,
                        region,
                        placement,
                        shape,
                    )
                    for token in batch
                ]
                request = scheduler_pb2.SubmitWorkflowRequest(tasks=specs)
                response = stub.SubmitWorkflow(request, timeout=60.0)
                for token in batch:
                    task_id = UUID(response.task_ids[token])
                    self.tokens[task_id] = token
                    task_ids.append(task_id)
        return task_ids

    def fault(self) -> None:
        """Mark the moment of the fault (recovery time is counted from here)."""
        self.fault_at = time.monotonic()

    def finish(self) -> Report:
        """Wait until every run finished, check the invariants, add the table row."""
        deadline = time.monotonic() + FINISH_TIMEOUT
        task_ids = list(self.tokens)
        while self.checker.unfinished(task_ids) and time.monotonic() < deadline:
            time.sleep(0.25)
        recovery = time.monotonic() - self.fault_at
        report = self.checker.check(self.tokens)
        self.table.add(self.name, report, recovery, self.notes)
        assert report.violations == [], "\n".join(report.violations[:20]) + self.cluster.logs()
        assert report.completed == report.submitted
        return report


def _spec(
    command: str,
    token: str,
    region: str | None,
    placement: Placement | None,
    shape: TaskSpec,
) -> scheduler_pb2.WorkflowTask:
    """One workflow task running ``command``, named (and locally named) ``token``.

    ``shape`` gives the fields not set here (kind, retry policy).
    """
    # A task with a region may spill to its fallbacks unless told otherwise; without one, any
    # region takes it (``prefer`` names a region to prefer, so it needs one).
    chosen = placement or (Placement.PREFER if region else Placement.STRICT)
    spec = replace(shape, name=token, command=command, region=region, placement=chosen)
    return scheduler_pb2.WorkflowTask(local_name=token, spec=task_spec_to_proto(spec))


def wait_for(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout:g} s")
        time.sleep(0.05)


def wait_for_value(probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns a value; fail after ``timeout`` seconds."""
    found: list[T] = []

    def got() -> bool:
        value = probe()
        if value is not None:
            found.append(value)
        return bool(found)

    wait_for(got, timeout)
    return found[0]


def delegated(cluster: ChaosCluster, task_id: UUID) -> datetime | None:
    """When the task's latest run was delegated (via the master's API); None before."""
    try:
        with cluster.client() as client:
            run = client.get(task_id).latest_run
    except TaskmeshError:
        return None
    return None if run is None else run.delegated_at


def count_in(cluster: ChaosCluster, state: RunState, region: str) -> int:
    """How many of the latest runs in ``region`` are in ``state`` (via the master's API)."""
    try:
        with cluster.client() as client:
            return len(client.list(states=[state], region=region, limit=5000))
    except TaskmeshError:
        return 0


def region_status(cluster: ChaosCluster, region: str) -> cluster_pb2.RegionStatus:
    """``region`` as the master's GetCluster reports it (empty when it cannot tell)."""
    try:
        with grpc.insecure_channel(cluster.live_master().addresses["grpc"]) as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            response = stub.GetCluster(scheduler_pb2.GetClusterRequest(), timeout=10.0)
    except grpc.RpcError:
        return cluster_pb2.RegionStatus()
    statuses = [status for status in response.regions if status.name == region]
    return statuses[0] if statuses else cluster_pb2.RegionStatus()


def queue_depth(cluster: ChaosCluster, region: str) -> int:
    """How many runs wait in ``region``'s queue, as the region's own ``/readyz`` says.

    Not the master's GetCluster: it may show what it last heard from a region it cannot reach.
    """
    try:
        return int(cluster.regions[region].readiness()[1]["components"]["queue"]["depth"])
    except OSError:
        return 0


def running_on(cluster: ChaosCluster, worker_id: str) -> int:
    """How many runs the worker runs, as its region reports it."""
    region = worker_id.split("-")[1]
    workers = region_status(cluster, region).workers
    return sum(worker.running for worker in workers if worker.id == worker_id)


@pytest.fixture
def scenario(
    request: pytest.FixtureRequest,
    chaos_cluster: ChaosCluster,
    checker: InvariantChecker,
    chaos_table: ChaosTable,
) -> Scenario:
    name = request.node.name.removeprefix("test_")
    return Scenario(name, chaos_cluster, checker, chaos_table)


def test_worker_sigkill_mid_run(scenario: Scenario, full: bool) -> None:
    """A worker killed while running: its runs are lost and retried, nothing runs twice else."""
    cluster = scenario.cluster
    count = 64 if full else 8
    scenario.submit(count, seconds=3.0, region="eu", placement=Placement.STRICT)
    # eu has 8 slots: with 8 runs running there, worker-eu-1 runs some of them
    wait_for(lambda: count_in(cluster, RunState.RUNNING, "eu") >= min(count, 8))
    scenario.fault()
    cluster.workers["worker-eu-1"].kill()
    time.sleep(0.5)
    cluster.start_worker("eu", 0)
    report = scenario.finish()
    assert report.lost_attempts >= 1  # the killed worker held running runs


def test_region_sigstop_past_lease(scenario: Scenario, full: bool) -> None:
    """A region frozen past its lease is reaped; when it thaws, its stale work changes nothing."""
    cluster = scenario.cluster
    count = 300 if full else 40
    # Strict: the reaped runs wait for eu instead of spilling to us, so the thawed region still
    # finds them in its queue and tries (and fails) to assign them under their old epochs.
    scenario.submit(count, seconds=0.5 if full else 0.3, region="eu", placement=Placement.STRICT)
    wait_for(lambda: queue_depth(cluster, "eu") >= count // 3)
    scenario.fault()
    region = cluster.regions["eu"]
    region.signal(signal.SIGSTOP)
    time.sleep(4.0)  # twice the master's region_heartbeat_timeout
    region.signal(signal.SIGCONT)
    scenario.finish()  # the invariants: nothing lost, nothing applied under a stale epoch
    # Whether the thawed region still tried a stale write depends on whether its workers'
    # breakers let it assign before its queue was taken back; refusals are printed, not required
    # (the fencing itself is tested in tests/integration/test_region_fencing.py).
    _, report = region.readiness()
    print("stale epoch refusals:", report["components"]["ledger"]["stale_epoch_refusals"])


def test_region_sigkill_with_queued_runs(scenario: Scenario, full: bool) -> None:
    """A region killed holding many queued runs and restarted: each run ends exactly once."""
    cluster = scenario.cluster
    count = 1000 if full else 100
    scenario.submit(count, seconds=0.5 if full else 0.3, region="eu")
    wait_for(lambda: queue_depth(cluster, "eu") >= count // 2)
    scenario.fault()
    cluster.regions["eu"].kill()
    time.sleep(0.5)
    cluster.start_region("eu")
    scenario.finish()


def test_master_sigkill_during_dispatch(scenario: Scenario, full: bool) -> None:
    """The master killed while it delegates a burst, then restarted: no run is stranded."""
    cluster = scenario.cluster
    scenario.submit(500 if full else 60, seconds=0.05)
    scenario.fault()
    master = cluster.live_master()
    master.kill()
    cluster.masters.remove(master)
    cluster.start_master()
    scenario.finish()


def test_regions_carry_on_without_a_master(scenario: Scenario, full: bool) -> None:
    """With every master down, regions assign what they hold and record the results."""
    cluster = scenario.cluster
    count = 300 if full else 40
    scenario.submit(count, seconds=0.2, region="eu")
    wait_for(lambda: queue_depth(cluster, "eu") >= count // 2)
    scenario.fault()
    master = cluster.live_master()
    master.kill()
    cluster.masters.remove(master)
    try:
        wait_for(lambda: scenario.checker.unfinished(list(scenario.tokens)) == 0, 120.0)
    finally:
        cluster.start_master()
    scenario.finish()


def test_ledger_restart_under_load(scenario: Scenario, full: bool) -> None:
    """PostgreSQL stops for a while: daemons report not ready, keep results, and recover."""
    cluster = scenario.cluster
    count = 300 if full else 40
    scenario.submit(count, seconds=0.3)
    wait_for(lambda: count_in(cluster, RunState.RUNNING, "eu") >= 2)
    scenario.fault()
    cluster.server.halt()
    try:
        region = cluster.regions["eu"]
        wait_for(lambda: region.readiness()[0] == 503, 30.0)
        time.sleep(3.0 if full else 1.0)
    finally:
        cluster.server.resume()
    wait_for(lambda: region.readiness()[0] == 200, 60.0)
    scenario.finish()
    daemons = [*cluster.regions.values(), *cluster.masters, *cluster.workers.values()]
    assert [d.name for d in daemons if not d.alive] == []  # no daemon crashed


def test_standby_master_takes_over(scenario: Scenario, full: bool) -> None:
    """Two masters; the first is SIGKILLed, then a region dies: the standby reaps it.

    The takeover time is from the SIGKILL until the standby holds the dispatcher lock (its log
    says so) and until a task submitted right after the kill is delegated.
    """
    cluster = scenario.cluster
    standby = cluster.start_master()
    first = cluster.masters[0]
    log_start = standby.log_path.stat().st_size
    killed_at, killed = datetime.now(UTC), time.monotonic()
    first.kill()
    cluster.masters.remove(first)
    (probe,) = scenario.submit(1, seconds=0.05, region="us", placement=Placement.STRICT)

    def holds_lock() -> bool:
        log = standby.log_path.read_bytes()[log_start:].decode(errors="replace")
        return TAKEOVER_LINE in log

    wait_for(holds_lock, 60.0)
    lock_s = time.monotonic() - killed
    delegated_at = wait_for_value(lambda: delegated(cluster, probe), 60.0)
    takeover_s = (delegated_at - killed_at).total_seconds()
    print(f"standby takeover: lock after {lock_s:.2f} s, dispatching after {takeover_s:.2f} s")
    scenario.notes = f"takeover {takeover_s:.1f} s (lock {lock_s:.1f} s)"
    count = 200 if full else 24
    scenario.submit(count, seconds=0.3, region="eu")
    wait_for(lambda: queue_depth(cluster, "eu") >= count // 4)
    scenario.fault()
    region = cluster.regions["eu"]
    region.kill()
    try:
        wait_for(lambda: scenario.checker.unfinished(list(scenario.tokens)) == 0, 120.0)
    finally:
        cluster.start_region("eu")
    scenario.finish()


def test_two_masters_at_once(scenario: Scenario, full: bool) -> None:
    """Two masters dispatch the same ledger: every run is delegated and executed once."""
    cluster = scenario.cluster
    second = cluster.start_master()
    try:
        scenario.fault()
        scenario.submit(500 if full else 60, seconds=0.05)
        report = scenario.finish()
        assert report.executions == report.submitted
    finally:
        second.stop()
        cluster.masters.remove(second)


def test_worker_drain_from_the_cli(scenario: Scenario, full: bool) -> None:
    """`taskmesh worker drain ID`: the worker finishes its runs (none lost) and exits 0."""
    cluster = scenario.cluster
    scenario.submit(32 if full else 8, seconds=1.0, region="eu", placement=Placement.STRICT)
    wait_for(lambda: running_on(cluster, "worker-eu-2") >= 1, 120.0)
    scenario.fault()
    master = cluster.live_master().addresses["grpc"]
    drain = [sys.executable, "-m", "taskmesh", "worker", "drain", "worker-eu-2"]
    answer = subprocess.run(
        [*drain, "--master", master], capture_output=True, text=True, check=False
    )
    assert answer.returncode == 0, answer.stderr
    assert "worker worker-eu-2 of region eu is draining" in answer.stdout
    worker = cluster.workers["worker-eu-2"]
    assert worker.process is not None
    assert worker.process.wait(60) == 0
    report = scenario.finish()
    assert report.lost_attempts == 0  # it finished what it ran
    cluster.start_worker("eu", 1)
    unknown = subprocess.run(
        [*drain[:-1], "no-such-worker", "--master", master],
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 1
    assert "no worker 'no-such-worker' is registered" in unknown.stderr


# Retried at once and often: without the kind breaker, every retry would run (and fail) again.
DOWNSTREAM_RETRY = RetryPolicy(
    max_attempts=100,
    initial_backoff=timedelta(milliseconds=100),
    max_backoff=timedelta(milliseconds=500),
    retry_on=frozenset({RunState.FAILED}),
)


def kind_breaker(cluster: ChaosCluster, region: str, kind: str) -> cluster_pb2.KindBreaker:
    """A kind breaker of ``region`` as GetCluster reports it (empty before the kind is seen)."""
    found = [k for k in region_status(cluster, region).kind_breakers if k.kind == kind]
    return found[0] if found else cluster_pb2.KindBreaker()


def rest_kind_breaker(cluster: ChaosCluster, region: str, kind: str) -> dict[str, Any]:
    """The same kind breaker in the master's ``GET /v1/cluster``."""
    url = f"http://{cluster.live_master().addresses['http']}/v1/cluster"
    with urllib.request.urlopen(url, timeout=10) as response:
        regions = {item["name"]: item for item in json.load(response)["regions"]}
    return next(item for item in regions[region]["kinds"] if item["kind"] == kind)


def breaker_changes(log: str, breaker: str) -> Counter[str]:
    """How often the region's log says ``breaker`` moved, by ``old -> new``."""
    prefix = f"breaker {breaker}: "
    return Counter(
        line.split(prefix, 1)[1].split(" after ", 1)[0]
        for line in log.splitlines()
        if prefix in line
    )


def test_downstream_failing_for_one_kind(scenario: Scenario, full: bool) -> None:
    """Every run of one kind fails while its downstream is down: the kind's breaker opens,
    its runs wait in the region's queue instead of burning attempts, other kinds keep flowing,
    and once the downstream is back a trial run closes the breaker and every run succeeds."""
    cluster = scenario.cluster
    region = cluster.regions["eu"]
    log_start = region.log_path.stat().st_size
    down = cluster.base / "downstream-down"
    down.touch()
    count, others = (200, 100) if full else (24, 16)
    broken = scenario.submit(
        count,
        seconds=0.3,
        region="eu",
        placement=Placement.STRICT,
        kind="downstream",
        failing_while=down,
        retry=DOWNSTREAM_RETRY,
    )
    wait_for(lambda: kind_breaker(cluster, "eu", "downstream").state == BREAKER_OPEN)
    wait_for(lambda: kind_breaker(cluster, "eu", "downstream").waiting >= 1)
    steady = scenario.submit(others, seconds=0.1, region="eu", placement=Placement.STRICT)
    wait_for(lambda: scenario.checker.unfinished(steady) == 0, 120.0)  # while it is down
    assert rest_kind_breaker(cluster, "eu", "downstream")["state"] in ("open", "half_open")
    time.sleep(8.0 if full else 3.0)  # several trial periods with the downstream still down
    assert scenario.checker.unfinished(broken) == count  # none ran out of attempts
    down.unlink()
    scenario.fault()  # recovery: from the downstream's return until every run succeeded
    wait_for(lambda: kind_breaker(cluster, "eu", "downstream").state == BREAKER_CLOSED, 120.0)
    report = scenario.finish()
    failed = scenario.checker.attempt_states(broken)["failed"]
    log = region.log_path.read_bytes()[log_start:].decode(errors="replace")
    changes = breaker_changes(log, "kind:downstream")
    trials = changes["open -> half-open"]
    slots = cluster.workers_per_region * cluster.slots_per_worker
    scenario.table.annotate(f"{failed} failed attempts ({trials} trials)")
    # Before it opened at most every slot held a failing run; after, only the trials ran.
    assert failed <= KIND_FAIL_MAX + slots + trials, (failed, trials, changes)
    assert changes["closed -> open"] >= 1
    assert changes["half-open -> closed"] >= 1
    assert report.executions == report.submitted
