"""Schedule-to-start deadlines swept by the master: runs that never started end timed_out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_master_harness import eventually, make_topology, running_master

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import NOT_STARTED_IN_TIME, RetryPolicy, RunState, TaskSpec
from taskmesh.master.start_deadlines import StartDeadlines

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
BOUND = timedelta(seconds=5)


async def test_pending_and_delegated_runs_past_their_bound_time_out(
    ledger: Ledger, scenario
) -> None:
    """Not before the bound; after it, pending and queued runs end timed_out, running ones not."""
    delegated = await scenario.delegated(schedule_to_start_timeout=BOUND)
    running = await scenario.move(
        await scenario.delegated(schedule_to_start_timeout=BOUND),
        RunState.ASSIGNED,
        RunState.RUNNING,
    )
    _, pending = await scenario.submit(schedule_to_start_timeout=BOUND)  # after the claims
    _, unbounded = await scenario.submit()
    assert await StartDeadlines(ledger, clock=lambda: NOW + BOUND).sweep_once() == []
    outcomes = await StartDeadlines(ledger, clock=lambda: NOW + BOUND * 2).sweep_once()
    assert sorted(o.transition.run_id for o in outcomes) == sorted([pending.id, delegated.id])
    for run_id in (pending.id, delegated.id):
        ended = await ledger.get_run(run_id)
        assert ended.state is RunState.TIMED_OUT
        assert ended.error == NOT_STARTED_IN_TIME
        assert ended.finished_at == NOW + BOUND * 2
    assert (await ledger.get_run(running.id)).state is RunState.RUNNING
    assert (await ledger.get_run(unbounded.id)).state is RunState.PENDING
    events = [e for e in await ledger.events_after(0) if e.to_state is RunState.TIMED_OUT]
    assert {e.detail.get("cause") for e in events} == {"schedule_to_start_timeout"}


async def test_a_timed_out_start_fails_dependents_or_is_retried(ledger: Ledger, scenario) -> None:
    """Like any terminal outcome: dependents upstream_failed; a listing policy retries it."""
    upstream, _ = await scenario.submit(schedule_to_start_timeout=BOUND)
    _, dependent = await scenario.submit(dependencies=(upstream.id,))
    retry = RetryPolicy(max_attempts=2, retry_on=frozenset({RunState.TIMED_OUT}))
    _, retried = await scenario.submit(schedule_to_start_timeout=BOUND, retry=retry)
    outcomes = await StartDeadlines(ledger, clock=lambda: NOW + BOUND * 2).sweep_once()
    assert len(outcomes) == 2
    assert (await ledger.get_run(dependent.id)).state is RunState.UPSTREAM_FAILED
    attempts = await ledger.list_runs(retried.task_id)
    assert [(run.attempt, run.state) for run in attempts] == [
        (1, RunState.TIMED_OUT),
        (2, RunState.PENDING),
    ]


async def test_a_running_master_times_out_a_run_no_region_could_start(ledger: Ledger) -> None:
    """No region is reachable, so the run waits in pending; the master ends it timed_out."""
    spec = TaskSpec(name="late", command="true", schedule_to_start_timeout=timedelta(seconds=1))
    _, run, _ = await ledger.submit_task(spec, datetime.now(UTC))
    assert run is not None

    async def timed_out() -> bool:
        return (await ledger.get_run(run.id)).state is RunState.TIMED_OUT

    async with running_master(make_topology(("eu",)), ledger):
        await eventually(timed_out, within=10)
    assert (await ledger.get_run(run.id)).error == NOT_STARTED_IN_TIME
