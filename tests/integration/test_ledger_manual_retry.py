"""An operator's retry: which tasks may be retried, the attempt it creates, revived dependents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from taskmesh.common.errors import ConflictError, NotFoundError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import CronSchedule, EventFilter, RunState, TaskSpec, WorkflowTask

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
LATER = NOW + timedelta(minutes=3)


@pytest.mark.parametrize(
    "state",
    [
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.LOST,
    ],
)
async def test_a_run_that_ended_without_success_gets_a_next_attempt(
    ledger: Ledger, scenario, state: RunState
) -> None:
    """Same fire time, attempt + 1, pending at once, with an event naming the retried attempt."""
    ended = await scenario.run_in(state)
    await ledger.set_priority(ended.task_id, 42)
    retried = await ledger.retry_task(ended.task_id, LATER)
    run = retried.run
    assert (run.task_id, run.due_at, run.attempt) == (
        ended.task_id,
        ended.due_at,
        ended.attempt + 1,
    )
    assert (run.state, run.priority, run.ready_at) == (RunState.PENDING, 42, LATER)
    assert retried.requeued == ()
    assert (await ledger.latest_run(ended.task_id)) == run
    events = await ledger.events_after(0, filters=EventFilter(run_id=run.id))
    assert [(e.to_state, e.detail["cause"], e.detail["retry_of"]) for e in events] == [
        (RunState.PENDING, "retry", str(ended.id))
    ]
    (claimed,) = await ledger.claim_due_runs({"r1": 10}, LATER)
    assert claimed.run_id == run.id


@pytest.mark.parametrize(
    ("state", "message"),
    [
        (RunState.SUCCEEDED, "already succeeded"),
        (RunState.PENDING, "still active .*pending"),
        (RunState.RUNNING, "still active .*running"),
        (RunState.BLOCKED, "still active .*blocked"),
    ],
)
async def test_succeeded_and_active_tasks_are_refused(
    ledger: Ledger, scenario, state: RunState, message: str
) -> None:
    """Nothing is created for a task that succeeded or is still under way."""
    run = await scenario.run_in(state)
    with pytest.raises(ConflictError, match=message):
        await ledger.retry_task(run.task_id, LATER)
    assert (await ledger.latest_run(run.task_id)) == await ledger.get_run(run.id)


async def test_unknown_task_and_a_task_without_runs(ledger: Ledger) -> None:
    """An unknown id is not found; a recurring task with no fire yet has nothing to retry."""
    with pytest.raises(NotFoundError):
        await ledger.retry_task(uuid4(), LATER)
    task, _, _ = await ledger.submit_task(
        TaskSpec("tick", "true", schedule=CronSchedule("* * * * *")), NOW
    )
    with pytest.raises(ConflictError, match="no run to retry"):
        await ledger.retry_task(task.id, LATER)


async def test_a_second_retry_is_refused_while_the_first_is_pending(
    ledger: Ledger, scenario
) -> None:
    """The first retry's attempt is active, so the second one is a conflict."""
    failed = await scenario.run_in(RunState.FAILED)
    await ledger.retry_task(failed.task_id, LATER)
    with pytest.raises(ConflictError, match="still active"):
        await ledger.retry_task(failed.task_id, LATER)


def item(name: str, *depends_on: str) -> WorkflowTask:
    """A workflow task running ``true``."""
    return WorkflowTask(name, TaskSpec(name, "true"), depends_on)


async def test_retrying_a_failed_step_revives_its_upstream_failed_dependents(
    ledger: Ledger, scenario
) -> None:
    """extract → load → report: load failed, report upstream_failed; retry load revives report."""
    workflow = await ledger.submit_workflow(
        "etl", [item("extract"), item("load", "extract"), item("report", "load")], NOW
    )
    ids = {name: task.id for name, (task, _) in workflow.tasks.items()}
    extract = await ledger.latest_run(ids["extract"])
    assert extract is not None
    await scenario.claim()
    await scenario.move(
        await ledger.get_run(extract.id), RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED
    )
    await scenario.claim()
    load = await ledger.latest_run(ids["load"])
    assert load is not None
    await scenario.move(load, RunState.ASSIGNED, RunState.RUNNING, RunState.FAILED)
    report = await ledger.latest_run(ids["report"])
    assert report is not None
    assert report.state is RunState.UPSTREAM_FAILED

    with pytest.raises(ConflictError, match="retry that one first"):
        await ledger.retry_task(ids["report"], LATER)
    retried = await ledger.retry_task(ids["load"], LATER)
    assert (retried.run.state, retried.run.attempt) == (RunState.PENDING, 2)
    assert [(r.task_id, r.state, r.attempt) for r in retried.requeued] == [
        (ids["report"], RunState.BLOCKED, 2)
    ]
    (claimed,) = await ledger.claim_due_runs({"r1": 10}, LATER)
    await scenario.move(
        await ledger.get_run(claimed.run_id),
        RunState.ASSIGNED,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    )
    revived = await ledger.latest_run(ids["report"])
    assert revived is not None
    assert revived.state is RunState.PENDING
