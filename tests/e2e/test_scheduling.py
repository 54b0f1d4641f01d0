"""Scheduling semantics end to end: workflows, priorities, aging, idempotency, cancellation,
timeouts, retries, pausing and the schedule preview, on real processes and PostgreSQL.

The cluster is small on purpose: one region, ``solo``, with one worker of 2 slots and
``age_step: 500ms``, which tests saturate to make runs queue. Each test leaves it idle. Tests
only use the public interfaces: the Python client (gRPC), REST and the ``taskmesh`` command.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import yaml
from e2e_harness import RunningCluster, running_cluster
from test_cluster import eventually, wait_all

from taskmesh.client import Client
from taskmesh.common.errors import ConflictError
from taskmesh.common.model import (
    NOT_STARTED_IN_TIME,
    IntervalSchedule,
    OverlapPolicy,
    Placement,
    RetryPolicy,
    Run,
    RunState,
    TaskSpec,
)

AGE_STEP = timedelta(milliseconds=500)
SOLO_SLOTS = 2


def scheduling_topology(database_url: str) -> dict[str, Any]:
    """One small region with fast aging."""
    return {
        "ledger": {"url": database_url},
        "master": {"dispatch_interval": "200ms", "region_heartbeat_timeout": "10s"},
        "regions": [
            {
                "name": "solo",
                "worker_heartbeat_timeout": "2s",
                "capacity": 1000,
                "age_step": f"{AGE_STEP.total_seconds()}s",
                "workers": {"count": 1, "slots": SOLO_SLOTS, "heartbeat_interval": "250ms"},
            },
        ],
    }


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, database_admin: Any, template_database: str
) -> Iterator[RunningCluster]:
    """This module's own cluster (overrides the conftest one)."""
    base = tmp_path_factory.mktemp("scheduling")
    with running_cluster(base, database_admin, template_database, scheduling_topology) as up:
        yield up


def taskmesh(
    cluster: RunningCluster, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the ``taskmesh`` command against the cluster's master."""
    return cluster.cli(*args, check=check)


def rest(cluster: RunningCluster, method: str, path: str, body: object = None) -> Any:
    """One REST call; the decoded JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{cluster.rest}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def solo(name: str, command: str, priority: int = 0, **fields: Any) -> TaskSpec:
    """A task pinned to the small region."""
    return TaskSpec(
        name=name,
        command=command,
        priority=priority,
        region="solo",
        placement=Placement.STRICT,
        **fields,
    )


def saturate_solo(client: Client, seconds: float) -> list[str]:
    """Fill every slot of ``solo`` with a sleeper; returns their task ids once all run."""
    ids = [
        str(client.submit_spec(solo(f"blocker-{i}", f"sleep {seconds}")).task.id)
        for i in range(SOLO_SLOTS)
    ]
    eventually(
        lambda: all(
            (run := client.get(task_id).latest_run) and run.state is RunState.RUNNING
            for task_id in ids
        ),
        what="solo saturated",
    )
    return ids


def latest(client: Client, task_id: str) -> Run:
    """A task's newest attempt (it must have one)."""
    run = client.get(task_id).latest_run
    assert run is not None
    return run


def processes_with(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline and "pytest" not in cmdline:
            found.append(int(entry.name))
    return found


# --- workflows --------------------------------------------------------------------------------

DAG_SIZE = 20
FAILING = "n03"


def dag_parents(index: int) -> list[str]:
    """A binary tree plus a few cross edges: ``n05`` waits for ``n02`` and ``n01``, etc."""
    parents = [] if index == 0 else [f"n{(index - 1) // 2:02d}"]
    if index % 5 == 0 and index >= 5:
        parents.append(f"n{index - 4:02d}")
    return parents


def descendants(root: str) -> set[str]:
    """Every node that waits, directly or not, for ``root``."""
    children: dict[str, list[str]] = {}
    for index in range(DAG_SIZE):
        for parent in dag_parents(index):
            children.setdefault(parent, []).append(f"n{index:02d}")
    found: set[str] = set()
    frontier = [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def test_a_twenty_node_yaml_workflow_fails_exactly_the_descendants_of_its_failure(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """`taskmesh workflow submit`: one node exits 3; its transitive dependents, and only they,
    end upstream_failed; every other node succeeds."""
    tasks = [
        {
            "local_name": f"n{i:02d}",
            "name": f"dag-n{i:02d}",
            "command": "exit 3" if f"n{i:02d}" == FAILING else "true",
            "region": "solo",
            "depends_on": dag_parents(i),
        }
        for i in range(DAG_SIZE)
    ]
    path = tmp_path / "dag.yaml"
    path.write_text(yaml.safe_dump({"name": "dag", "tasks": tasks}))
    submitted = json.loads(taskmesh(cluster, "workflow", "submit", str(path), "--json").stdout)
    ids: dict[str, str] = submitted["task_ids"]
    assert sorted(ids) == [f"n{i:02d}" for i in range(DAG_SIZE)]
    with cluster.client() as client:
        infos = wait_all(client, list(ids.values()))
    states = {
        name: info.latest_run.state
        for name, info in zip(ids, infos, strict=True)
        if info.latest_run is not None
    }
    doomed = descendants(FAILING)
    assert doomed == {"n07", "n08", "n15", "n16", "n17", "n18"}
    assert states[FAILING] is RunState.FAILED
    assert {name for name, state in states.items() if state is RunState.UPSTREAM_FAILED} == doomed
    succeeded = {name for name, state in states.items() if state is RunState.SUCCEEDED}
    assert succeeded == set(ids) - doomed - {FAILING}


def test_a_bad_workflow_file_is_refused_naming_the_file_and_field(
    cluster: RunningCluster, tmp_path: Path
) -> None:
    """Unknown local names and cycles are refused before anything is stored."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "a", "command": "true"},
                    {"name": "b", "command": "true", "depends_on": ["c"]},
                ]
            }
        )
    )
    result = taskmesh(cluster, "workflow", "submit", str(path), check=False)
    assert result.returncode == 1
    assert f"{path}: tasks[1].depends_on[0]" in result.stderr
    assert '"c"' in result.stderr
    path.write_text(
        yaml.safe_dump(
            {
                "tasks": [
                    {"name": "a", "command": "true", "depends_on": ["b"]},
                    {"name": "b", "command": "true", "depends_on": ["a"]},
                ]
            }
        )
    )
    result = taskmesh(cluster, "workflow", "submit", str(path), check=False)
    assert result.returncode == 1
    assert "cycle: a -> b -> a" in result.stderr
    assert "Traceback" not in result.stderr


# --- priorities and aging ---------------------------------------------------------------------


def test_cancelling_blocked_and_queued_runs_ends_them_cancelled(cluster: RunningCluster) -> None:
    """A run blocked on a dependency and one delegated into a saturated region's queue: both
    cancelled over gRPC, in the ledger and in the region, and neither ever starts."""
    with cluster.client() as client:
        blockers = saturate_solo(client, 60)
        upstream = [UUID(blockers[0])]
        blocked = client.submit("true", name="blocked", region="solo", dependencies=upstream)
        queued = client.submit_spec(solo("queued", "true")).task
        eventually(
            lambda: latest(client, str(queued.id)).state is RunState.DELEGATED, what="queued"
        )
        assert latest(client, str(blocked.id)).state is RunState.BLOCKED
        for task in (blocked, queued):
            assert len(client.cancel(task.id, "e2e")) == 1
        for blocker in blockers:
            client.cancel(blocker)
        wait_all(client, blockers)
        time.sleep(0.5)  # a wrongly kept queued run would be assigned by now
        ended = [latest(client, str(task.id)) for task in (blocked, queued)]
    assert [run.state for run in ended] == [RunState.CANCELLED, RunState.CANCELLED]
    assert all(run.started_at is None and run.worker_id is None for run in ended)


def test_a_reprioritised_queued_run_overtakes_the_runs_queued_before_it(
    cluster: RunningCluster,
) -> None:
    """`taskmesh priority` on a run waiting in a saturated region: it is assigned first."""
    with cluster.client() as client:
        blockers = saturate_solo(client, 60)
        queued = [str(client.submit_spec(solo(f"queued-{i}", "true")).task.id) for i in range(5)]
        target = str(client.submit_spec(solo("target", "true")).task.id)
        eventually(lambda: latest(client, target).state is RunState.DELEGATED, what="target queued")
        assert "1 unfinished run" in taskmesh(cluster, "priority", target, "50").stdout
        for blocker in blockers:  # free the slots: the queue drains in its new order
            client.cancel(blocker)
        infos = wait_all(client, [*queued, target])
        assert all(latest(client, b).state is RunState.CANCELLED for b in blockers)
    runs = {str(info.task.id): info.latest_run for info in infos if info.latest_run}
    assert all(run.state is RunState.SUCCEEDED for run in runs.values())
    assert runs[target].priority == 50
    target_assigned = runs[target].assigned_at
    assert target_assigned is not None
    assert all(
        target_assigned < (runs[task_id].assigned_at or target_assigned) for task_id in queued
    )


def test_a_low_priority_run_starts_within_the_aging_bound_under_a_stream_of_high_priority_work(
    cluster: RunningCluster,
) -> None:
    """High-priority work arrives faster than ``solo`` can run it. A priority-0 run gains one
    point per ``age_step`` waiting: after (10 - 0)·age_step = 5 s no newly queued run outranks
    it. So no high run queued more than 5 s after it may start before it, and it does start."""
    high, low_priority = 10, 0
    bound = (high - low_priority) * AGE_STEP
    stop = threading.Event()
    stream: list[str] = []

    def produce(client: Client) -> None:
        deadline = time.monotonic() + 40
        while not stop.is_set() and time.monotonic() < deadline:
            for _ in range(2):  # ~6 runs/s against a capacity of at most 4/s
                stream.append(str(client.submit_spec(solo("high", "sleep 0.5", high)).task.id))
            time.sleep(0.33)

    with cluster.client() as client, cluster.client() as producer_client:
        producer = threading.Thread(target=produce, args=(producer_client,))
        producer.start()
        try:
            time.sleep(1.5)  # a backlog of high work first
            low = str(client.submit_spec(solo("low", "true", low_priority)).task.id)
            eventually(
                lambda: latest(client, low).started_at is not None,
                timeout=bound.total_seconds() + 25,
                what="the low-priority run started",
            )
        finally:
            stop.set()
            producer.join()
        low_run = latest(client, low)
        high_runs = [latest(client, task_id) for task_id in stream]
        for task_id in stream:  # do not leave the backlog to the next test
            with contextlib.suppress(ConflictError):
                client.cancel(task_id)
    assert low_run.delegated_at is not None
    assert low_run.started_at is not None
    waited = low_run.started_at - low_run.delegated_at
    assert waited >= bound - timedelta(seconds=1), f"started after {waited}: nothing outranked it"
    overtook = [
        run
        for run in high_runs
        if run.started_at is not None
        and run.started_at < low_run.started_at
        and run.delegated_at is not None
        and run.delegated_at > low_run.delegated_at
    ]
    assert overtook, "the stream never outranked the low run: the test saturated nothing"
    tolerance = timedelta(milliseconds=300)  # ledger stamp vs the region's own enqueue time
    queued_after = [
        (run.delegated_at - low_run.delegated_at).total_seconds()
        for run in overtook
        if run.delegated_at is not None
    ]
    assert max(queued_after) <= (bound + tolerance).total_seconds(), queued_after


# --- idempotency ------------------------------------------------------------------------------


def test_concurrent_idempotent_submits_over_grpc_and_rest_return_one_task(
    cluster: RunningCluster,
) -> None:
    """Twelve clients race with one key: one task, one run, the same id for everyone."""
    key = f"once-{uuid4()}"
    spec = TaskSpec(name="once", command="true", region="solo", idempotency_key=key)

    def over_grpc(_: int) -> tuple[str, bool]:
        with cluster.client() as client:
            answer = client.submit_spec(spec)
        return str(answer.task.id), answer.deduplicated

    def over_rest(_: int) -> tuple[str, bool]:
        body = {"name": "once", "command": "true", "region": "solo", "idempotency_key": key}
        answer = rest(cluster, "POST", "/v1/tasks", body)
        return answer["task"]["id"], answer["deduplicated"]

    with ThreadPoolExecutor(12) as pool:
        grpc_answers = [pool.submit(over_grpc, i) for i in range(8)]
        rest_answers = [pool.submit(over_rest, i) for i in range(4)]
        answers = [future.result() for future in grpc_answers + rest_answers]
    assert len({task_id for task_id, _ in answers}) == 1
    assert sorted(deduplicated for _, deduplicated in answers) == [False] + [True] * 11
    with cluster.client() as client:
        info = client.wait(answers[0][0], timeout=60)
    assert len(info.runs) == 1


# --- cancellation and timeouts ----------------------------------------------------------------


def test_cancelling_a_running_sixty_second_task_ends_it_cancelled_within_two_seconds(
    cluster: RunningCluster,
) -> None:
    """REST cancel of `sleep 60`: the process group is gone and the run is cancelled in < 2 s."""
    marker = "60.0417"
    with cluster.client() as client:
        task = client.submit(f"sleep {marker}", name="sixty", region="solo")
        eventually(lambda: latest(client, str(task.id)).state is RunState.RUNNING, what="running")
        assert processes_with(marker)
        asked = datetime.now().astimezone()
        answer = rest(cluster, "POST", f"/v1/tasks/{task.id}/cancel", {"reason": "e2e"})
        assert len(answer["cancelled_run_ids"]) == 1
        eventually(
            lambda: latest(client, str(task.id)).state is RunState.CANCELLED,
            timeout=10,
            what="cancelled",
        )
        run = latest(client, str(task.id))
    assert run.finished_at is not None  # when the worker saw the process group end
    elapsed = (run.finished_at - asked).total_seconds()
    assert elapsed < 2.0, f"cancelled {elapsed:.2f}s after the request"
    assert not processes_with(marker)
    with pytest.raises(urllib.error.HTTPError) as refused:  # a finished run: a clear no-op error
        rest(cluster, "POST", f"/v1/tasks/{task.id}/cancel")
    assert refused.value.code == 409
    assert "no unfinished runs" in json.load(refused.value)["error"]["message"]


def test_an_execution_timeout_kills_the_command_and_ends_timed_out(
    cluster: RunningCluster,
) -> None:
    """`taskmesh submit --timeout 1s` of a 30-second sleep: timed_out, process group killed."""
    marker = "30.0419"
    task_id = taskmesh(
        cluster, "submit", "--command", f"sleep {marker}", "--timeout", "1s", "--region", "solo"
    ).stdout.strip()
    with cluster.client() as client:
        info = client.wait(task_id, timeout=30)
    run = info.latest_run
    assert run is not None
    assert run.state is RunState.TIMED_OUT
    assert run.started_at is not None
    assert run.finished_at is not None
    assert timedelta(seconds=1) <= run.finished_at - run.started_at < timedelta(seconds=10)
    assert len(info.runs) == 1  # not retried by default
    assert not processes_with(marker)


def test_a_run_that_cannot_start_in_time_ends_timed_out_while_still_queued(
    cluster: RunningCluster,
) -> None:
    """REST submit with schedule_to_start_timeout 1s into a saturated region: it never starts;
    the master ends it timed_out while the blockers still run."""
    with cluster.client() as client:
        blockers = saturate_solo(client, 4)
        body = {
            "name": "impatient",
            "command": "true",
            "region": "solo",
            "placement": "strict",
            "schedule_to_start_timeout": "1s",
        }
        task_id = rest(cluster, "POST", "/v1/tasks", body)["task"]["id"]
        info = client.wait(task_id, timeout=30)
        blocker_runs = [info.latest_run for info in wait_all(client, blockers)]
    run = info.latest_run
    assert run is not None
    assert run.state is RunState.TIMED_OUT
    assert run.error == NOT_STARTED_IN_TIME
    assert run.started_at is None
    assert run.finished_at is not None
    assert all(
        b is not None and b.finished_at and run.finished_at < b.finished_at for b in blocker_runs
    )


# --- retries ----------------------------------------------------------------------------------


def test_a_retried_task_records_each_attempt_and_its_backoff(cluster: RunningCluster) -> None:
    """Three attempts of a failing command, each its own row; the waits between them follow
    the exponential backoff with jitter: within [½, 1) of 0.5 s, then of 1 s."""
    policy = RetryPolicy(
        max_attempts=3,
        initial_backoff=timedelta(milliseconds=500),
        max_backoff=timedelta(seconds=10),
        multiplier=2.0,
        retry_on=frozenset({RunState.FAILED}),
    )
    spec = TaskSpec(name="flaky", command="exit 1", region="solo", retry=policy)
    with cluster.client() as client:
        task = client.submit_spec(spec).task
        eventually(
            lambda: len((info := client.get(task.id)).runs) == 3 and info.finished,
            what="three attempts",
        )
        attempts = sorted(client.get(task.id).runs, key=lambda run: run.attempt)
    assert [(run.attempt, run.state) for run in attempts] == [
        (1, RunState.FAILED),
        (2, RunState.FAILED),
        (3, RunState.FAILED),
    ]
    assert len({run.id for run in attempts}) == 3
    assert len({run.due_at for run in attempts}) == 1  # attempts of one run
    for previous, following, nominal in zip(attempts, attempts[1:], (0.5, 1.0), strict=False):
        assert previous.finished_at is not None
        assert following.ready_at is not None
        wait = (following.ready_at - previous.finished_at).total_seconds()
        assert nominal / 2 <= wait < nominal, (previous.attempt, wait)
        assert following.started_at is not None
        assert following.started_at >= following.ready_at


# --- schedules --------------------------------------------------------------------------------


def runs_of(client: Client, task_id: str) -> list[Run]:
    """A task's attempts, oldest fire first."""
    return sorted(client.get(task_id, run_limit=1000).runs, key=lambda run: run.due_at)


def test_pause_resume_schedule_and_cancel_of_an_interval_task(cluster: RunningCluster) -> None:
    """An every-second task (CLI): paused (CLI) it makes no runs and `taskmesh schedule` shows it
    paused; resumed (CLI) it fires again with its next fires listed; cancelled it stops."""
    submit = ["submit", "--name", "ticker", "--command", "true", "--region", "solo"]
    task_id = taskmesh(cluster, *submit, "--every", "1s", "--overlap", "forbid").stdout.strip()
    with cluster.client() as client:
        schedule = client.get(task_id).task.spec.schedule
        assert schedule == IntervalSchedule(
            timedelta(seconds=1), schedule.start_at, overlap=OverlapPolicy.FORBID
        )
        eventually(lambda: len(runs_of(client, task_id)) >= 2, what="two fires")
        assert "paused" in taskmesh(cluster, "pause", task_id).stdout
        paused_at = datetime.now().astimezone()
        count = len(runs_of(client, task_id))
        table = taskmesh(cluster, "schedule", "--next", "3").stdout
        row = next(line for line in table.splitlines() if line.startswith(task_id))
        assert row.split()[1:7] == ["ticker", "every", "1s", "UTC", "yes", "-"]
        time.sleep(2.0)
        assert len(runs_of(client, task_id)) == count
        after_pause = [run for run in runs_of(client, task_id) if run.due_at > paused_at]
        assert all(run.state is RunState.CANCELLED for run in after_pause)  # made ahead
        assert "resumed" in taskmesh(cluster, "resume", task_id).stdout
        eventually(lambda: len(runs_of(client, task_id)) >= count + 2, what="fires again")
        (shown,) = [
            item
            for item in rest(cluster, "GET", "/v1/schedules?next=3")["schedules"]
            if item["task"]["id"] == task_id
        ]
        assert "paused" not in shown["task"]  # proto3 JSON leaves out false
        fires = [datetime.fromisoformat(fire) for fire in shown["next_fires"]]
        assert [b - a for a, b in itertools.pairwise(fires)] == [timedelta(seconds=1)] * 2
        rest(cluster, "POST", f"/v1/tasks/{task_id}/cancel")
        assert client.get(task_id).task.paused
        time.sleep(0.5)  # a fire materialised just before the cancel may still be recorded
        stopped = len(runs_of(client, task_id))
        time.sleep(2.0)
        assert len(runs_of(client, task_id)) == stopped
    with pytest.raises(urllib.error.HTTPError) as unknown:
        rest(cluster, "POST", f"/v1/tasks/{uuid4()}/pause")
    assert unknown.value.code == 404
