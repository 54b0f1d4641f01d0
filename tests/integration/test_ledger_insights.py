"""Reads for the dashboard and metrics: exact totals, recent activity, workflows, task filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from taskmesh.common.errors import NotFoundError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    CronSchedule,
    RunState,
    TaskFilter,
    TaskSpec,
    Transition,
    WorkflowTask,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
STEP = timedelta(seconds=10)
CRON = CronSchedule("* * * * *")


async def test_count_runs_by_state_counts_every_attempt_exactly(ledger: Ledger, scenario) -> None:
    """More runs than a listing page, several states: the totals are exact."""
    assert await ledger.count_runs_by_state() == {}
    for _ in range(3):
        await scenario.run_in(RunState.FAILED)
    await scenario.run_in(RunState.SUCCEEDED)
    await scenario.run_in(RunState.BLOCKED)  # and its pending upstream
    cron, _, _ = await ledger.submit_task(TaskSpec("many", "true", schedule=CRON), NOW)
    fires = [NOW + timedelta(minutes=minute) for minute in range(1005)]
    await ledger.materialise_runs(cron.id, fires, NOW)
    counts = await ledger.count_runs_by_state()
    assert counts == {
        RunState.FAILED: 3,
        RunState.SUCCEEDED: 1,
        RunState.BLOCKED: 1,
        RunState.PENDING: 1006,
    }


async def test_run_activity_buckets_throughput_and_pickup_latency(ledger: Ledger, scenario) -> None:
    """Attempts land in the slice they ended / started in; latency is started - ready."""
    runs = [await scenario.delegated() for _ in range(3)]
    offsets = [(12, 13), (14, 25), (32, 40)]  # (started, finished) seconds after NOW
    for run, (started, finished) in zip(runs, offsets, strict=True):
        at = [NOW, NOW + timedelta(seconds=started), NOW + timedelta(seconds=finished)]
        targets = [RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED]
        for when, target in zip(at, targets, strict=True):
            current = await ledger.get_run(run.id)
            transition = Transition(run.id, current.epoch, target, when, worker_id="w1")
            (outcome,) = await ledger.record_transitions([transition])
            assert outcome.applied
    until = NOW + timedelta(seconds=50)
    buckets = await ledger.run_activity(until, timedelta(seconds=50), STEP)
    assert [b.start for b in buckets] == [NOW + STEP * n for n in range(5)]
    assert [b.finished for b in buckets] == [0, 1, 1, 0, 1]
    assert all(b.failed == 0 for b in buckets)
    assert buckets[1].pickup_p50 == pytest.approx(13.0)
    assert buckets[1].pickup_p95 == pytest.approx(13.9)
    assert buckets[3].pickup_p50 == pytest.approx(32.0)
    assert buckets[0].pickup_p50 is None
    assert buckets[4].pickup_p95 is None


async def test_workflow_graph_has_nodes_latest_states_and_edges(ledger: Ledger, scenario) -> None:
    """A diamond: four nodes with their latest attempts, four edges; unknown ids not found."""
    items = [
        WorkflowTask("a", TaskSpec("a", "true")),
        WorkflowTask("b", TaskSpec("b", "true"), ("a",)),
        WorkflowTask("c", TaskSpec("c", "true"), ("a",)),
        WorkflowTask("d", TaskSpec("d", "true"), ("b", "c")),
    ]
    submitted = await ledger.submit_workflow("diamond", items, NOW)
    ids = {name: task.id for name, (task, _) in submitted.tasks.items()}
    graph = await ledger.workflow_graph(submitted.workflow_id)
    assert (graph.workflow.name, graph.workflow.task_count) == ("diamond", 4)
    states = {
        status.task.spec.name: status.latest_run.state
        for status in graph.nodes
        if status.latest_run
    }
    assert states == {
        "a": RunState.PENDING,
        "b": RunState.BLOCKED,
        "c": RunState.BLOCKED,
        "d": RunState.BLOCKED,
    }
    assert set(graph.edges) == {
        (ids["a"], ids["b"]),
        (ids["a"], ids["c"]),
        (ids["b"], ids["d"]),
        (ids["c"], ids["d"]),
    }
    listed = await ledger.list_workflows()
    assert [(w.id, w.task_count) for w in listed] == [(submitted.workflow_id, 4)]
    with pytest.raises(NotFoundError, match="workflow"):
        await ledger.workflow_graph(uuid4())


async def test_task_filters_by_kind_search_and_creation_time(ledger: Ledger) -> None:
    """Kind is exact, search matches a piece of the name or the start of the id, since is >=."""
    early, _, _ = await ledger.submit_task(TaskSpec("nightly-Report", "true", kind="batch"), NOW)
    late, _, _ = await ledger.submit_task(TaskSpec("ping", "true"), NOW + timedelta(minutes=10))
    names = lambda statuses: [s.task.spec.name for s in statuses]  # noqa: E731
    assert names(await ledger.list_tasks(filters=TaskFilter(kind="batch"))) == ["nightly-Report"]
    assert names(await ledger.list_tasks(filters=TaskFilter(search="report"))) == ["nightly-Report"]
    assert names(await ledger.list_tasks(filters=TaskFilter(search="50%_"))) == []
    prefix = str(late.id)[:8].upper()
    assert names(await ledger.list_tasks(filters=TaskFilter(search=prefix))) == ["ping"]
    since = NOW + timedelta(minutes=5)
    assert names(await ledger.list_tasks(filters=TaskFilter(created_since=since))) == ["ping"]
    assert early.id != late.id
