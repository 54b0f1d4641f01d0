"""Operator actions: reprioritise, cancel, and reaping a dead region."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from taskmesh.common.errors import ConflictError, NotFoundError, ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    CronSchedule,
    Placement,
    RegionState,
    RunState,
    TaskSpec,
    Transition,
    TransitionRefusal,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
LATER = NOW + timedelta(minutes=5)
CRON = TaskSpec("tick", "true", schedule=CronSchedule("* * * * *"))


async def test_set_priority_changes_unfinished_runs(ledger: Ledger, scenario) -> None:
    """The task and its unfinished runs take the new priority; finished runs keep theirs."""
    task, _, _ = await ledger.submit_task(CRON, NOW)
    first, second = await ledger.materialise_runs(task.id, [NOW, NOW + timedelta(minutes=1)], NOW)
    (claimed,) = await ledger.claim_due_runs({"r1": 1}, NOW)
    done = await scenario.move(
        await ledger.get_run(claimed.run_id),
        RunState.ASSIGNED,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    )
    assert done.id == first.id
    changed = await ledger.set_priority(task.id, 77)
    assert [(run.id, run.priority, run.region) for run in changed] == [(second.id, 77, None)]
    assert (await ledger.get_task(task.id)).spec.priority == 77
    assert (await ledger.get_run(first.id)).priority == 0


async def test_set_priority_reports_where_in_flight_runs_are(ledger: Ledger, scenario) -> None:
    """A delegated run is returned with its region, so the master can tell that region."""
    run = await scenario.delegated()
    (changed,) = await ledger.set_priority(run.task_id, -10)
    assert (changed.id, changed.state, changed.region, changed.priority) == (
        run.id,
        RunState.DELEGATED,
        "r1",
        -10,
    )


async def test_set_priority_validates(ledger: Ledger, scenario) -> None:
    """Out-of-range priorities and unknown tasks are refused."""
    _, run = await scenario.submit()
    with pytest.raises(ValidationError, match="priority"):
        await ledger.set_priority(run.task_id, 1001)
    with pytest.raises(NotFoundError):
        await ledger.set_priority(uuid4(), 1)


async def test_cancel_cancels_waiting_runs_and_returns_in_flight_ones(
    ledger: Ledger, scenario
) -> None:
    """Pending runs are cancelled here; delegated ones are returned with their region."""
    task, _, _ = await ledger.submit_task(CRON, NOW)
    early, late = await ledger.materialise_runs(task.id, [NOW, NOW + timedelta(hours=1)], NOW)
    await ledger.claim_due_runs({"r1": 5}, NOW)
    _, downstream = await scenario.submit(dependencies=(task.id,))
    cancellation = await ledger.cancel_task(task.id, LATER)
    assert [run.id for run in cancellation.cancelled] == [late.id]
    assert cancellation.cancelled[0].state is RunState.CANCELLED
    assert cancellation.cancelled[0].finished_at == LATER
    assert [(run.id, run.state, run.region) for run in cancellation.to_forward] == [
        (early.id, RunState.DELEGATED, "r1")
    ]
    assert (await ledger.get_run(downstream.id)).state is RunState.UPSTREAM_FAILED


async def test_cancelling_a_finished_task_is_a_conflict(ledger: Ledger, scenario) -> None:
    """Nothing unfinished to cancel: ConflictError saying so; unknown task: NotFoundError."""
    run = await scenario.run_in(RunState.SUCCEEDED)
    with pytest.raises(ConflictError, match=r"no unfinished runs.*succeeded"):
        await ledger.cancel_task(run.task_id, NOW)
    with pytest.raises(NotFoundError):
        await ledger.cancel_task(uuid4(), NOW)


async def test_cancel_blocked_run(ledger: Ledger, scenario) -> None:
    """A blocked run is cancelled directly."""
    blocked, _ = await scenario.blocked()
    cancellation = await ledger.cancel_task(blocked.task_id, NOW)
    assert [run.state for run in cancellation.cancelled] == [RunState.CANCELLED]
    assert cancellation.to_forward == ()


async def test_reap_region_takes_its_runs_back(ledger: Ledger, scenario) -> None:
    """Delegated runs go back to pending (bound to their task's region, whatever the
    placement); assigned ones (a worker may have started them) and running ones are lost and
    retried; the region is marked down, and its old epochs are refused."""
    await ledger.heartbeat_region("r1", "10.0.0.1:7000", 5, NOW)
    await ledger.heartbeat_region("r2", "10.0.0.2:7000", 5, LATER)
    delegated = await scenario.delegated()
    strict = await scenario.delegated(region="r1", placement=Placement.STRICT)
    prefer = await scenario.delegated(region="r1", placement=Placement.PREFER)
    assigned = await scenario.move(await scenario.delegated(), RunState.ASSIGNED)
    running = await scenario.run_in(RunState.RUNNING)
    stale = await ledger.stale_regions(LATER, timedelta(seconds=30))
    assert [region.name for region in stale] == ["r1"]

    result = await ledger.reap_region("r1", LATER)

    assert {run.id for run in result.requeued} == {delegated.id, strict.id, prefer.id}
    assert all(run.epoch == 2 and run.state is RunState.PENDING for run in result.requeued)
    regions = {run.id: run.region for run in result.requeued}
    assert regions == {delegated.id: None, strict.id: "r1", prefer.id: "r1"}
    assert {run.id for run in result.lost} == {assigned.id, running.id}
    assert [(run.attempt, run.state) for run in result.retries] == [(2, RunState.PENDING)] * 2
    assert await ledger.stale_regions(LATER, timedelta(seconds=30)) == []
    (region,) = [r for r in await ledger.list_regions() if r.name == "r1"]
    assert region.state is RegionState.DOWN
    late_assignment = Transition(delegated.id, delegated.epoch, RunState.ASSIGNED, LATER)
    (outcome,) = await ledger.record_transitions([late_assignment])
    assert outcome.refusal is TransitionRefusal.STALE_EPOCH
    claimed = await ledger.claim_due_runs({"r2": 10}, LATER)
    assert delegated.id in {c.run_id for c in claimed}
    revived = await ledger.heartbeat_region("r1", "10.0.0.1:7000", 5, LATER)
    assert revived.state is RegionState.UP


async def test_reap_of_an_empty_region_is_harmless(ledger: Ledger) -> None:
    """Reaping a region with nothing in flight changes nothing."""
    result = await ledger.reap_region("nowhere", NOW)
    assert (result.requeued, result.lost, result.retries) == ((), (), ())
