"""The three tiers end to end: real master, two regions, four workers, real PostgreSQL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from e2e_harness import RunningCluster
from prometheus_client.parser import text_string_to_metric_families

from taskmesh.client import Client, TaskInfo
from taskmesh.common.model import Run, RunState
from taskmesh.common.rpc import cluster_pb2, scheduler_pb2, scheduler_pb2_grpc

T = TypeVar("T")


def eventually(probe: Callable[[], T | None], timeout: float = 60.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def wait_all(client: Client, task_ids: list[str], timeout: float = 120.0) -> list[TaskInfo]:
    """Every task's final state, polling until all are terminal."""
    pending = set(task_ids)
    finished: dict[str, TaskInfo] = {}
    deadline = time.monotonic() + timeout
    while pending:
        for task_id in list(pending):
            info = client.get(task_id)
            if info.finished:
                finished[task_id] = info
                pending.discard(task_id)
        assert time.monotonic() < deadline, f"{len(pending)} tasks unfinished after {timeout}s"
        time.sleep(0.2)
    return [finished[task_id] for task_id in task_ids]


def test_500_mixed_tasks_all_succeed_in_their_regions(cluster: RunningCluster) -> None:
    rng = random.Random(500)
    regions = ["eu", "us", None]
    with cluster.client() as client:
        submitted = [
            (
                client.submit(
                    "true", name=f"bulk-{i}", priority=rng.randint(-5, 5), region=regions[i % 3]
                ),
                regions[i % 3],
            )
            for i in range(500)
        ]
        infos = wait_all(client, [str(task.id) for task, _ in submitted])
    for (task, region), info in zip(submitted, infos, strict=True):
        run = info.latest_run
        assert run is not None
        assert run.state is RunState.SUCCEEDED, (task.id, run)
        assert run.attempt == 1
        assert run.region in {"eu", "us"}
        if region is not None:
            assert run.region == region
        assert run.worker_id is not None
        assert run.worker_id.startswith(f"worker-{run.region}-")


def test_saturated_region_assigns_higher_priority_first(cluster: RunningCluster) -> None:
    with cluster.client() as client:
        # Fill all 8 slots of eu (2 workers x 4 slots) so new work has to queue.
        blockers = [client.submit("sleep 60", name=f"blocker-{i}", region="eu") for i in range(8)]
        eventually(
            lambda: all(client.get(t.id).latest_run.state is RunState.RUNNING for t in blockers),
            what="blockers running",
        )
        low, high = [], []
        for i in range(10):  # interleaved, low first: submission order must not win
            low.append(client.submit("true", name=f"low-{i}", priority=0, region="eu"))
            high.append(client.submit("true", name=f"high-{i}", priority=10, region="eu"))
        # Free the slots only once every run waits in eu's queue, however slow submitting was.
        eventually(
            lambda: all(
                client.get(t.id).latest_run.state is RunState.DELEGATED for t in low + high
            ),
            what="all runs queued in eu",
        )
        for blocker in blockers:
            client.cancel(blocker.id)
        low_runs = [info.latest_run for info in wait_all(client, [str(t.id) for t in low])]
        high_runs = [info.latest_run for info in wait_all(client, [str(t.id) for t in high])]
    assert all(run is not None and run.state is RunState.SUCCEEDED for run in low_runs + high_runs)
    last_high = max(run.assigned_at for run in high_runs if run and run.assigned_at)
    first_low = min(run.assigned_at for run in low_runs if run and run.assigned_at)
    assert last_high <= first_low


def test_rest_schedule_reaches_picked_started_completed(cluster: RunningCluster) -> None:
    body = {"command": "echo classic", "scheduled_at": datetime.now(UTC).isoformat()}
    request = urllib.request.Request(
        f"{cluster.rest}/schedule", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        scheduled = json.load(response)
    assert scheduled["command"] == "echo classic"
    assert isinstance(scheduled["scheduled_at"], int)

    def completed() -> dict[str, object] | None:
        url = f"{cluster.rest}/status?task_id={scheduled['task_id']}"
        with urllib.request.urlopen(url, timeout=10) as response:
            status: dict[str, object] = json.load(response)
        return status if "completed_at" in status else None

    status = eventually(completed, what="completed_at")
    assert "failed_at" not in status
    picked, started, done = status["picked_at"], status["started_at"], status["completed_at"]
    assert isinstance(picked, int)
    assert isinstance(started, int)
    assert isinstance(done, int)
    assert scheduled["scheduled_at"] <= picked <= started <= done


def test_killed_worker_run_is_lost_then_finished_by_another_attempt(
    cluster: RunningCluster,
) -> None:
    with cluster.client() as client:
        task = client.submit("sleep 5; echo survived", name="victim", region="eu")
        running = eventually(
            lambda: (
                (run := client.get(task.id).latest_run) and run.state is RunState.RUNNING and run
            ),
            what="the task running",
        )
        assert running.worker_id is not None
        killed = cluster.worker_pid(running.worker_id)
        os.kill(killed, signal.SIGKILL)
        info = client.wait(task.id, timeout=90)
    # The supervisor restarts the dead worker under the same id (a new process).
    restarted = eventually(
        lambda: (pid := cluster.worker_pid(running.worker_id or "")) != killed and pid,
        what="the killed worker restarted",
    )
    os.kill(restarted, 0)
    attempts = sorted(info.runs, key=lambda run: run.attempt)
    assert [run.state for run in attempts] == [RunState.LOST, RunState.SUCCEEDED]
    assert attempts[0].worker_id == running.worker_id
    assert attempts[1].output_tail == "survived\n"


def test_failing_command_ends_failed_and_is_not_rerun(cluster: RunningCluster) -> None:
    with cluster.client() as client:
        task = client.submit("echo oops; echo bad >&2; exit 7", name="failing")
        info = client.wait(task.id, timeout=60)
        time.sleep(1.0)  # long enough for a wrong retry to show up
        info = client.get(task.id)
    assert len(info.runs) == 1
    run = info.runs[0]
    assert run.state is RunState.FAILED
    assert run.exit_code == 7
    assert run.output_tail == "oops\nbad\n"
    assert "7" in run.error


def test_cli_submit_status_list_logs(cluster: RunningCluster) -> None:
    def taskmesh(*args: str) -> str:
        return cluster.cli(*args).stdout

    task_id = taskmesh("submit", "--name", "cli-hello", "--command", "echo hello cli").strip()
    with cluster.client() as client:
        client.wait(task_id, timeout=60)
    status = taskmesh("status", task_id)
    assert "succeeded" in status
    assert "exit code 0" in status
    assert json.loads(taskmesh("status", task_id, "--json"))["state"] == "succeeded"
    assert task_id in taskmesh("list", "--state", "succeeded", "--limit", "1000")
    assert taskmesh("logs", task_id) == "hello cli\n"


def test_cli_reports_bad_input_naming_the_field(cluster: RunningCluster) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "taskmesh",
            "submit",
            "--command",
            "true",
            "--region",
            "mars",
            "--master",
            cluster.master,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "region" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_cluster_prints_the_running_cluster(cluster: RunningCluster) -> None:
    def taskmesh(*args: str) -> str:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "taskmesh",
                "cluster",
                "--state-file",
                str(cluster.state_file),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert taskmesh("--rest").strip() == cluster.rest
    listing = taskmesh()
    assert cluster.master in listing
    assert "worker-us-2" in listing


def test_cli_retry_reruns_a_failed_task_and_refuses_a_succeeded_one(
    cluster: RunningCluster,
) -> None:
    def taskmesh(*args: str) -> subprocess.CompletedProcess[str]:
        return cluster.cli(*args, check=False)

    with cluster.client() as client:
        # Fails on its first attempt, succeeds on the next: the marker file tells them apart.
        marker = cluster.state_file.parent / "retry-marker"
        command = f"if [ -e {marker} ]; then echo second; else touch {marker}; exit 3; fi"
        failing = client.submit(command, name="cli-retry")
        assert client.wait(failing.id, timeout=60).latest_run.state is RunState.FAILED
        retried = taskmesh("retry", str(failing.id))
        assert retried.returncode == 0, retried.stderr
        assert "attempt 2" in retried.stdout
        info = client.wait(failing.id, timeout=60)
        assert [run.state for run in info.runs] == [RunState.SUCCEEDED, RunState.FAILED]
        assert info.latest_run.output_tail == "second\n"
        refused = taskmesh("retry", str(failing.id))
    assert refused.returncode == 1
    assert "already succeeded" in refused.stderr


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` on a /metrics page."""
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def taskmesh_health(cluster: RunningCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """``taskmesh health`` against the cluster's state file."""
    argv = [sys.executable, "-m", "taskmesh", "health", "--state-file", str(cluster.state_file)]
    return subprocess.run([*argv, *args], capture_output=True, text=True, timeout=60, check=False)


def test_observability_health_metrics_and_run_logs(cluster: RunningCluster) -> None:
    """A run moves the region's pickup histogram and the master's run counts, its worker's log
    lines carry its run id, and `taskmesh health` lists every daemon ready (exit 0), or names
    a daemon that does not answer (exit 1)."""
    state = cluster.state
    region_metrics = f"http://{state['regions']['eu']['http']}/metrics"
    master_metrics = f"{cluster.rest}/metrics"
    pickups = "taskmesh_region_pickup_latency_seconds_count"
    before = metric_total(region_metrics, pickups)
    with cluster.client() as client:
        task = client.submit("echo observed", name="observed", region="eu")
        info = client.wait(task.id, timeout=60)
    run = info.latest_run
    assert run is not None
    assert run.state is RunState.SUCCEEDED
    assert metric_total(region_metrics, pickups) > before
    assert metric_total(master_metrics, "taskmesh_runs", state="succeeded", region="eu") >= 1
    worker_log = (cluster.log_dir / f"{run.worker_id}.log").read_text()
    assert f"run_id={run.id}" in worker_log  # `taskmesh up` keeps its log files as text

    healthy = eventually(
        lambda: (result := taskmesh_health(cluster)).returncode == 0 and result,
        what="every daemon ready",
    )
    table = healthy.stdout.splitlines()
    assert table[0].split()[:2] == ["DAEMON", "TIER"]
    names = {line.split()[0] for line in table[1:]}
    assert names >= {"master", "region-eu", "region-us", "worker-eu-1", "worker-us-2"}
    assert all(" SERVING " in line and " yes " in line for line in table[1:]), healthy.stdout

    worker_pid = cluster.worker_pid("worker-us-1")
    os.kill(worker_pid, signal.SIGSTOP)  # it cannot answer its probes (briefly: no heartbeats)
    try:
        stopped = taskmesh_health(cluster, "--timeout", "0.5")
    finally:
        os.kill(worker_pid, signal.SIGCONT)
    assert stopped.returncode == 1, stopped.stdout
    (row,) = [line for line in stopped.stdout.splitlines() if line.startswith("worker-us-1 ")]
    assert " NO " in row
    assert "DEADLINE_EXCEEDED" in row


# --- breakers and spillover (the cluster's topology: eu falls back to us, quick breakers) ---


def rest_regions(cluster: RunningCluster) -> dict[str, dict[str, Any]]:
    """``GET /v1/cluster``'s regions by name."""
    with urllib.request.urlopen(f"{cluster.rest}/v1/cluster", timeout=10) as response:
        body = json.load(response)
    return {region["name"]: region for region in body["regions"]}


def grpc_regions(cluster: RunningCluster) -> dict[str, cluster_pb2.RegionStatus]:
    """``GetCluster``'s regions by name."""
    with grpc.insecure_channel(cluster.master) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        response = stub.GetCluster(scheduler_pb2.GetClusterRequest(), timeout=10)
    return {region.name: region for region in response.regions}


def kind_breaker(cluster: RunningCluster, region: str, kind: str) -> dict[str, Any] | None:
    """One kind breaker of a region in ``GET /v1/cluster``, None before the kind is seen."""
    kinds = rest_regions(cluster)[region]["kinds"]
    return next((item for item in kinds if item["kind"] == kind), None)


def final_run(client: Client, task_id: str, timeout: float = 60.0) -> Run:
    """The task's newest run once it is terminal."""
    run = client.wait(task_id, timeout=timeout).latest_run
    assert run is not None
    return run


def current_run(client: Client, task_id: str) -> Run:
    """The task's newest run now."""
    run = client.get(task_id).latest_run
    assert run is not None
    return run


def test_worker_breakers_are_reported_closed(cluster: RunningCluster) -> None:
    def all_four() -> list[dict[str, Any]] | None:
        found = [w for region in rest_regions(cluster).values() for w in region["workers"]]
        return found if len(found) == 4 else None

    # An earlier test of the module stops and resumes a worker: wait until all four are back.
    workers = eventually(all_four, what="all four workers registered")
    assert {w["breaker"]["state"] for w in workers} == {"closed"}
    assert {w["breaker"]["opened_at"] for w in workers} == {None}
    described = grpc_regions(cluster)["us"].workers[0].breaker_status
    assert described.state == cluster_pb2.BREAKER_STATE_CLOSED


def test_failing_kind_is_held_back_then_one_trial_closes_it(cluster: RunningCluster) -> None:
    with cluster.client() as client:
        failing = [client.submit("exit 3", region="us", kind="flaky") for _ in range(2)]
        assert {final_run(client, str(t.id)).state for t in failing} == {RunState.FAILED}
        opened = eventually(
            lambda: (k := kind_breaker(cluster, "us", "flaky")) and k["state"] == "open" and k,
            what="the flaky kind breaker open",
        )
        assert opened["failures"] == 2
        assert opened["opened_at"] < opened["trial_at"]
        held = [client.submit("sleep 0.5", region="us", kind="flaky") for _ in range(3)]
        eventually(
            lambda: (k := kind_breaker(cluster, "us", "flaky")) and k["waiting"] == 3,
            what="3 flaky runs waiting in us",
        )
        # Held in the region's queue, not assigned and not failed against the broken kind.
        assert {current_run(client, str(t.id)).state for t in held} == {RunState.DELEGATED}
        steady = client.submit("true", region="us", kind="steady")
        assert final_run(client, str(steady.id)).state is RunState.SUCCEEDED
        runs = [final_run(client, str(t.id)) for t in held]
    assert {(run.state, run.attempt) for run in runs} == {(RunState.SUCCEEDED, 1)}
    spans = sorted((run.started_at, run.finished_at) for run in runs)
    trial_end = spans[0][1]
    assert trial_end is not None
    # Half-open let exactly one run through; the others started once that trial succeeded.
    assert all(start is not None and start >= trial_end for start, _ in spans[1:])
    eventually(
        lambda: (k := kind_breaker(cluster, "us", "flaky")) and k["state"] == "closed",
        what="the flaky kind breaker closed",
    )


def test_frozen_region_opens_its_breaker_prefer_spills_strict_waits_then_runs_home(
    cluster: RunningCluster,
) -> None:
    def submit(*args: str) -> str:
        argv = [sys.executable, "-m", "taskmesh", "submit", "--master", cluster.master]
        done = subprocess.run(
            [*argv, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    eu = cluster.region_pid("eu")
    os.kill(eu, signal.SIGSTOP)
    try:
        strict = submit("--command", "true", "--region", "eu")
        prefer = submit("--command", "true", "--region", "eu", "--placement", "prefer")
        eventually(
            lambda: rest_regions(cluster)["eu"]["breaker"]["state"] == "open",
            what="eu's breaker open in GET /v1/cluster",
        )
        status = grpc_regions(cluster)["eu"].breaker_status
        assert status.state == cluster_pb2.BREAKER_STATE_OPEN
        assert status.failures >= 2
        assert status.HasField("opened_at")
        with cluster.client() as client:
            spilled = final_run(client, prefer)
            assert (spilled.state, spilled.region) == (RunState.SUCCEEDED, "us")
            assert current_run(client, strict).state is RunState.PENDING
        regions = rest_regions(cluster)
        assert regions["eu"]["fallbacks"] == ["us"]
        assert regions["eu"]["spillover"]["out"] >= 1
        assert regions["us"]["spillover"]["in"] >= 1
    finally:
        os.kill(eu, signal.SIGCONT)
    with cluster.client() as client:
        home = final_run(client, strict)
    assert (home.state, home.region) == (RunState.SUCCEEDED, "eu")
    eventually(
        lambda: rest_regions(cluster)["eu"]["breaker"]["state"] == "closed",
        what="eu's breaker closed again",
    )
