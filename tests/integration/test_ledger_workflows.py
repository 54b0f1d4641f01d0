"""Submitting a workflow: every task in one transaction, dependencies blocked, all or nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from taskmesh.common.errors import ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.engine import asyncpg_url
from taskmesh.common.model import (
    AtSchedule,
    CronSchedule,
    Executor,
    IntervalSchedule,
    MisfirePolicy,
    OverlapPolicy,
    Placement,
    RetryPolicy,
    RunState,
    TaskSpec,
    Transition,
    WorkflowTask,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario


def item(name: str, *depends_on: str, **fields: Any) -> WorkflowTask:
    """A workflow task running ``true``."""
    return WorkflowTask(name, TaskSpec(name, "true", **fields), depends_on)


async def workflow_count(database_url: str) -> int:
    """Rows of the workflows table, read past the ledger."""
    engine = create_async_engine(asyncpg_url(database_url), poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            return int(
                (await connection.execute(text("SELECT count(*) FROM workflows"))).scalar_one()
            )
    finally:
        await engine.dispose()


async def test_roots_are_pending_and_dependents_blocked(ledger: Ledger) -> None:
    """Tasks are stored in any request order, each with the dependency rows of its local names."""
    items = [item("report", "load"), item("load", "extract-a", "extract-b")]
    items += [item("extract-a"), item("extract-b")]
    workflow = await ledger.submit_workflow("etl", items, NOW)
    assert list(workflow.tasks) == ["report", "load", "extract-a", "extract-b"]
    states = {name: run.state for name, (_, run) in workflow.tasks.items() if run is not None}
    assert states == {
        "report": RunState.BLOCKED,
        "load": RunState.BLOCKED,
        "extract-a": RunState.PENDING,
        "extract-b": RunState.PENDING,
    }
    ids = {name: task.id for name, (task, _) in workflow.tasks.items()}
    load = await ledger.get_task(ids["load"])
    assert load.workflow_id == workflow.workflow_id
    assert load.spec.dependencies == (ids["extract-a"], ids["extract-b"])


async def test_successes_unblock_the_workflow_in_order(ledger: Ledger) -> None:
    """The stored edges are the ones the dependency machinery follows."""
    workflow = await ledger.submit_workflow("pair", [item("first"), item("second", "first")], NOW)
    (_, first_run), (second, _) = workflow.tasks.values()
    assert first_run is not None
    claimed = await ledger.claim_due_runs({"r1": 10}, NOW)
    assert [c.run_id for c in claimed] == [first_run.id]
    run = await ledger.get_run(first_run.id)
    for target in (RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED):
        (outcome,) = await ledger.record_transitions(
            [Transition(run.id, run.epoch, target, NOW, worker_id="w1")]
        )
        assert outcome.run is not None
        run = outcome.run
    latest = await ledger.latest_run(second.id)
    assert latest is not None
    assert latest.state is RunState.PENDING


async def test_existing_tasks_may_be_dependencies_too(ledger: Ledger) -> None:
    """spec.dependencies names tasks stored before; local dependencies follow them."""
    earlier, _, _ = await ledger.submit_task(TaskSpec("earlier", "true"), NOW)
    items = [item("a"), item("b", "a", dependencies=(earlier.id,))]
    workflow = await ledger.submit_workflow("mixed", items, NOW)
    task, run = workflow.tasks["b"]
    assert task.spec.dependencies == (earlier.id, workflow.tasks["a"][0].id)
    assert run is not None
    assert run.state is RunState.BLOCKED


async def test_a_failure_midway_writes_nothing(ledger: Ledger, database_url: str) -> None:
    """The last task stored names a missing dependency: the workflow and its tasks roll back."""
    items = [item(f"t{i}", *([f"t{i - 1}"] if i else [])) for i in range(5)]
    items.append(item("bad", "t4", dependencies=(uuid4(),)))
    with pytest.raises(ValidationError) as raised:
        await ledger.submit_workflow("doomed", items, NOW)
    assert raised.value.field == "tasks[5].spec.dependencies"
    assert await ledger.list_tasks() == []
    assert await ledger.count_pending() == 0
    assert await workflow_count(database_url) == 0


async def test_a_graph_that_is_no_dag_is_refused(ledger: Ledger, database_url: str) -> None:
    """The ledger checks the graph itself too; nothing is written."""
    with pytest.raises(ValidationError, match="a -> b -> a"):
        await ledger.submit_workflow("loop", [item("a", "b"), item("b", "a")], NOW)
    with pytest.raises(ValidationError) as raised:
        await ledger.submit_workflow("dangling", [item("a"), item("b", "a", "zzz")], NOW)
    assert raised.value.field == "tasks[1].depends_on[1]"
    assert await workflow_count(database_url) == 0


async def test_independent_tasks_are_stored_in_bulk_as_a_single_submit_would(
    ledger: Ledger,
) -> None:
    """Plain tasks (no dependency, no key) take the bulk path; keyed and dependent ones do not."""
    later = datetime(2026, 3, 2, tzinfo=UTC)
    items = [
        item("a", region="eu", priority=7, labels={"bench": "x"}),
        item("b", schedule=AtSchedule(later)),
        item("keyed", idempotency_key=f"key-{uuid4()}"),
        item("after-a", "a"),
        item("c", executor=Executor.NOOP),
    ]
    workflow = await ledger.submit_workflow("bulk", items, NOW)
    assert list(workflow.tasks) == ["a", "b", "keyed", "after-a", "c"]
    for task, run in workflow.tasks.values():
        assert await ledger.get_task(task.id) == task
        assert task.workflow_id == workflow.workflow_id
        assert run is not None
        assert await ledger.get_run(run.id) == run
    runs = {name: run for name, (_, run) in workflow.tasks.items() if run is not None}
    assert runs["a"].state is RunState.PENDING
    assert (runs["a"].region, runs["a"].priority) == ("eu", 7)
    assert runs["b"].due_at == later
    assert runs["after-a"].state is RunState.BLOCKED
    assert runs["c"].due_at == NOW
    claimed = await ledger.claim_due_runs({"eu": 10}, NOW)
    assert {run.run_id for run in claimed} == {runs[n].id for n in ("a", "keyed", "c")}


async def test_the_bulk_path_stores_every_field_and_logs_every_creation(ledger: Ledger) -> None:
    """One statement stores the tasks: each reads back equal, every run's creation is logged."""
    full = item(
        "full",
        args=("-c", "echo 'a b'", ""),
        description="all the fields",
        region="eu",
        placement=Placement.PREFER,
        kind="heavy",
        priority=-3,
        timeout=timedelta(minutes=2, microseconds=7),
        schedule_to_start_timeout=timedelta(seconds=30),
        retry=RetryPolicy(
            max_attempts=4,
            initial_backoff=timedelta(seconds=2),
            max_backoff=timedelta(hours=1),
            multiplier=1.5,
            retry_on=frozenset({RunState.FAILED, RunState.LOST}),
        ),
        labels={"team": "data", "quote": 'say "hi"', "empty": ""},
    )
    cron = item(
        "cron",
        schedule=CronSchedule(
            "*/5 * * * *", "Europe/Paris", MisfirePolicy.NONE, OverlapPolicy.FORBID
        ),
    )
    every = item("every", schedule=IntervalSchedule(timedelta(minutes=3), NOW))
    many = [item(f"n{index}", executor=Executor.NOOP) for index in range(300)]
    before = (await ledger.events_after(0, limit=100_000) or [None])[-1]
    workflow = await ledger.submit_workflow("fields", [full, cron, every, *many], NOW)
    for name, (task, run) in workflow.tasks.items():
        assert await ledger.get_task(task.id) == task, name
        if name in ("cron", "every"):  # recurring: the materialiser creates the runs
            assert run is None
            continue
        assert run is not None
        assert await ledger.get_run(run.id) == run
    runs = [run for _, run in workflow.tasks.values() if run is not None]
    assert len(runs) == 301
    events = await ledger.events_after(before.id if before else 0, limit=100_000)
    assert sorted((str(e.run_id), e.from_state, e.to_state) for e in events) == sorted(
        (str(run.id), None, RunState.PENDING) for run in runs
    )
