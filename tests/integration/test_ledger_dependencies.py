"""Dependencies: blocked runs, unblocking on success, transitive upstream failure."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RetryPolicy, RunState, TaskSpec, Transition

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
SUCCESS = (RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED)
FAILURE = (RunState.ASSIGNED, RunState.RUNNING, RunState.FAILED)


async def _claimed(ledger: Ledger, run):
    """The run as delegated by a claim (which must pick it)."""
    claimed = await ledger.claim_due_runs({"r1": 100}, NOW)
    assert run.id in {c.run_id for c in claimed}
    return await ledger.get_run(run.id)


async def test_dependent_is_unblocked_when_its_dependency_succeeds(
    ledger: Ledger, scenario
) -> None:
    """A run waits in blocked and moves to pending in the transaction of the success."""
    _, upstream = await scenario.submit()
    _, downstream = await scenario.submit(dependencies=(upstream.task_id,))
    assert downstream.state is RunState.BLOCKED
    await scenario.move(await _claimed(ledger, upstream), *SUCCESS)
    unblocked = await ledger.get_run(downstream.id)
    assert unblocked.state is RunState.PENDING
    event = (await ledger.events_after(0, filters=None))[-1]
    assert (event.run_id, event.from_state, event.to_state) == (
        downstream.id,
        RunState.BLOCKED,
        RunState.PENDING,
    )
    assert event.detail == {"cause": "unblocked"}


async def test_dependent_waits_for_all_its_dependencies(ledger: Ledger, scenario) -> None:
    """With two dependencies, one success is not enough."""
    _, first = await scenario.submit()
    _, second = await scenario.submit()
    _, downstream = await scenario.submit(dependencies=(first.task_id, second.task_id))
    first, second = await _claimed(ledger, first), await ledger.get_run(second.id)
    await scenario.move(first, *SUCCESS)
    assert (await ledger.get_run(downstream.id)).state is RunState.BLOCKED
    await scenario.move(second, *SUCCESS)
    assert (await ledger.get_run(downstream.id)).state is RunState.PENDING


async def test_concurrent_successes_of_two_dependencies_unblock(
    ledger: Ledger, scenario, database_url: str
) -> None:
    """Two dependencies finishing in concurrent transactions still unblock their dependent."""
    _, first = await scenario.submit()
    _, second = await scenario.submit()
    _, downstream = await scenario.submit(dependencies=(first.task_id, second.task_id))
    first = await _claimed(ledger, first)
    second = await ledger.get_run(second.id)
    first = await scenario.move(first, RunState.ASSIGNED, RunState.RUNNING)
    second = await scenario.move(second, RunState.ASSIGNED, RunState.RUNNING)
    async with await Ledger.connect(database_url) as other:
        await asyncio.gather(
            ledger.record_transitions([Transition(first.id, 1, RunState.SUCCEEDED, NOW)]),
            other.record_transitions([Transition(second.id, 1, RunState.SUCCEEDED, NOW)]),
        )
    assert (await ledger.get_run(downstream.id)).state is RunState.PENDING


async def test_failure_fails_every_transitive_dependent(ledger: Ledger, scenario) -> None:
    """a → b → c and a → d: a failing makes b, c and d upstream_failed at once."""
    _, a = await scenario.submit()
    _, b = await scenario.submit(dependencies=(a.task_id,))
    _, c = await scenario.submit(dependencies=(b.task_id,))
    _, d = await scenario.submit(dependencies=(a.task_id,))
    _, unrelated = await scenario.submit()
    await scenario.move(await _claimed(ledger, a), *FAILURE)
    for run in (b, c, d):
        failed = await ledger.get_run(run.id)
        assert failed.state is RunState.UPSTREAM_FAILED
        assert failed.finished_at == NOW
        assert failed.error
    assert (await ledger.get_run(unrelated.id)).state is RunState.DELEGATED
    causes = [e.detail.get("cause") for e in await ledger.events_after(0)]
    assert causes.count("upstream_failed") == 3


async def test_a_retried_failure_does_not_fail_dependents(ledger: Ledger, scenario) -> None:
    """While a retry is coming, dependents keep waiting."""
    policy = RetryPolicy(max_attempts=2, retry_on=frozenset({RunState.FAILED}))
    _, a = await scenario.submit(retry=policy)
    _, b = await scenario.submit(dependencies=(a.task_id,))
    await scenario.move(await _claimed(ledger, a), *FAILURE)
    assert (await ledger.get_run(b.id)).state is RunState.BLOCKED


@pytest.mark.parametrize("lost_retry_limit", [0, 1])
async def test_lost_fails_dependents_only_without_retry(
    ledger: Ledger, scenario, lost_retry_limit: int
) -> None:
    """A lost run is retried by default; when it is not, its dependents fail."""
    _, a = await scenario.submit()
    _, b = await scenario.submit(dependencies=(a.task_id,))
    running = await scenario.move(await _claimed(ledger, a), RunState.ASSIGNED, RunState.RUNNING)
    lost = Transition(running.id, running.epoch, RunState.LOST, NOW)
    (outcome,) = await ledger.record_transitions([lost], lost_retry_limit=lost_retry_limit)
    expected = RunState.BLOCKED if lost_retry_limit else RunState.UPSTREAM_FAILED
    assert (await ledger.get_run(b.id)).state is expected
    assert (outcome.next_attempt is not None) == bool(lost_retry_limit)


async def test_submit_after_dependency_succeeded_is_pending(ledger: Ledger, scenario) -> None:
    """A dependency that already succeeded does not block."""
    _, a = await scenario.submit()
    await scenario.move(await _claimed(ledger, a), *SUCCESS)
    _, b = await scenario.submit(dependencies=(a.task_id,))
    assert b.state is RunState.PENDING


async def test_submit_after_dependency_failed_is_upstream_failed(ledger: Ledger, scenario) -> None:
    """A dependency that already ended without success dooms the new run at once."""
    _, a = await scenario.submit()
    await scenario.move(await _claimed(ledger, a), *FAILURE)
    _, b = await scenario.submit(dependencies=(a.task_id,))
    assert b.state is RunState.UPSTREAM_FAILED
    assert b.finished_at == NOW


async def test_unknown_dependency_is_named(ledger: Ledger) -> None:
    """Submitting with a dependency that does not exist names it and stores nothing."""
    missing = uuid4()
    spec = TaskSpec(name="t", command="true", dependencies=(missing,))
    with pytest.raises(NotFoundError, match=str(missing)):
        await ledger.submit_task(spec, NOW)
    assert await ledger.list_tasks() == []


async def test_duplicate_dependency_is_refused(ledger: Ledger, scenario) -> None:
    """A dependency listed twice is a validation error."""
    _, a = await scenario.submit()
    spec = TaskSpec(name="t", command="true", dependencies=(a.task_id, a.task_id))
    with pytest.raises(ValidationError, match="dependencies"):
        await ledger.submit_task(spec, NOW)


async def test_upstream_failed_by_transition_propagates(ledger: Ledger, scenario) -> None:
    """An explicit blocked → upstream_failed also fails the run's own dependents."""
    blocked, _ = await scenario.blocked()
    _, downstream = await scenario.submit(dependencies=(blocked.task_id,))
    await scenario.move(blocked, RunState.UPSTREAM_FAILED)
    assert (await ledger.get_run(downstream.id)).state is RunState.UPSTREAM_FAILED
