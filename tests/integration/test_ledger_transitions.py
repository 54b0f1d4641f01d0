"""The run state machine in the ledger: every (source, target) pair, epochs, batches."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.engine import asyncpg_url
from taskmesh.common.model import (
    LEGAL_SOURCES,
    RetryPolicy,
    RunState,
    Transition,
    TransitionRefusal,
    is_legal_transition,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
LATER = NOW + timedelta(seconds=30)

PAIRS = [(source, target) for source in RunState for target in RunState]
TIMESTAMP_OF = {
    RunState.ASSIGNED: "assigned_at",
    RunState.RUNNING: "started_at",
    **{state: "finished_at" for state in RunState if state.is_terminal},
}


def test_the_pairs_cover_every_legal_transition() -> None:
    """The parametrisation below includes each entry of LEGAL_SOURCES exactly once."""
    legal = {(s, t) for s, t in PAIRS if is_legal_transition(s, t)}
    assert legal == {(s, t) for t, sources in LEGAL_SOURCES.items() for s in sources}
    assert len(PAIRS) == len(RunState) ** 2


@pytest.mark.parametrize(("source", "target"), PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
async def test_transition(ledger: Ledger, scenario, source: RunState, target: RunState) -> None:
    """Legal transitions apply with their timestamp and event; others change nothing."""
    run = await scenario.run_in(source)
    assert run.state is source
    last_event = (await ledger.events_after(0, limit=10_000))[-1].id
    transition = Transition(run.id, run.epoch, target, LATER, worker_id="w2", exit_code=7)
    (outcome,) = await ledger.record_transitions([transition], lost_retry_limit=0)
    after = await ledger.get_run(run.id)
    events = await ledger.events_after(last_event)
    if not is_legal_transition(source, target):
        expected = (
            TransitionRefusal.DUPLICATE if source is target else TransitionRefusal.ILLEGAL_STATE
        )
        assert outcome.refusal is expected
        assert (outcome.current_state, outcome.current_epoch) == (source, run.epoch)
        assert outcome.run is None
        assert after == run
        assert events == []
        return
    assert outcome.applied
    assert outcome.run == after
    assert after.state is target
    assert after.epoch == run.epoch
    if target in TIMESTAMP_OF:
        assert getattr(after, TIMESTAMP_OF[target]) == LATER
    if target.is_terminal:
        assert after.exit_code == 7
    first = events[0]
    assert (first.run_id, first.from_state, first.to_state) == (run.id, source, target)
    assert first.at == LATER


@pytest.mark.parametrize("delta", [-1, 1])
async def test_stale_epoch_is_refused_and_changes_nothing(
    ledger: Ledger, scenario, delta: int
) -> None:
    """A write carrying another epoch than the run's is refused, however legal its target."""
    run = await scenario.run_in(RunState.RUNNING)
    transition = Transition(run.id, run.epoch + delta, RunState.SUCCEEDED, LATER)
    (outcome,) = await ledger.record_transitions([transition])
    assert outcome.refusal is TransitionRefusal.STALE_EPOCH
    assert (outcome.current_state, outcome.current_epoch) == (RunState.RUNNING, run.epoch)
    assert await ledger.get_run(run.id) == run


async def test_unknown_run_is_reported(ledger: Ledger) -> None:
    """A transition of a run the ledger does not know is refused as unknown."""
    (outcome,) = await ledger.record_transitions([Transition(uuid4(), 1, RunState.RUNNING, NOW)])
    assert outcome.refusal is TransitionRefusal.UNKNOWN_RUN
    assert outcome.current_state is None


async def test_batch_applies_in_order_and_reports_each_item(ledger: Ledger, scenario) -> None:
    """One batch: a run's whole life, a duplicate, a stale write, an illegal one, an unknown."""
    first = await scenario.delegated()
    second = await scenario.delegated()
    epoch = first.epoch
    batch = [
        Transition(first.id, epoch, RunState.ASSIGNED, NOW, worker_id="w1"),
        Transition(second.id, second.epoch, RunState.ASSIGNED, NOW, worker_id="w2"),
        Transition(first.id, epoch, RunState.RUNNING, NOW + timedelta(seconds=1)),
        Transition(first.id, epoch, RunState.RUNNING, NOW + timedelta(seconds=1)),
        Transition(first.id, epoch, RunState.SUCCEEDED, LATER, exit_code=0, output_tail="ok"),
        Transition(second.id, second.epoch - 1, RunState.RUNNING, NOW),
        Transition(second.id, second.epoch, RunState.SUCCEEDED, NOW),
        Transition(uuid4(), 1, RunState.FAILED, NOW),
    ]
    outcomes = await ledger.record_transitions(batch)
    assert [o.refusal for o in outcomes] == [
        None,
        None,
        None,
        TransitionRefusal.DUPLICATE,
        None,
        TransitionRefusal.STALE_EPOCH,
        TransitionRefusal.ILLEGAL_STATE,
        TransitionRefusal.UNKNOWN_RUN,
    ]
    assert [o.current_state for o in outcomes[:5]] == [
        RunState.ASSIGNED,
        RunState.ASSIGNED,
        RunState.RUNNING,
        RunState.RUNNING,
        RunState.SUCCEEDED,
    ]
    done = await ledger.get_run(first.id)
    assert (done.state, done.worker_id, done.exit_code, done.output_tail) == (
        RunState.SUCCEEDED,
        "w1",
        0,
        "ok",
    )
    assert (done.assigned_at, done.started_at, done.finished_at) == (
        NOW,
        NOW + timedelta(seconds=1),
        LATER,
    )
    assert (await ledger.get_run(second.id)).state is RunState.ASSIGNED
    states = [
        (e.from_state, e.to_state) for e in await ledger.events_after(0) if e.run_id == first.id
    ]
    assert states[-3:] == [
        (RunState.DELEGATED, RunState.ASSIGNED),
        (RunState.ASSIGNED, RunState.RUNNING),
        (RunState.RUNNING, RunState.SUCCEEDED),
    ]


async def test_output_tail_and_error_are_bounded(ledger: Ledger, scenario) -> None:
    """Huge output keeps its tail, huge errors their head, within the schema's limits."""
    run = await scenario.run_in(RunState.RUNNING)
    output = "x" * 70000 + "THE END"
    transition = Transition(
        run.id, run.epoch, RunState.FAILED, NOW, output_tail=output, error="E" * 9000
    )
    (outcome,) = await ledger.record_transitions([transition])
    assert outcome.run is not None
    assert outcome.run.output_tail.endswith("THE END")
    assert len(outcome.run.output_tail) == 65536
    assert len(outcome.run.error) == 8192


async def test_empty_batch_does_nothing(ledger: Ledger) -> None:
    """An empty batch is answered with no outcomes."""
    assert await ledger.record_transitions([]) == []


async def test_a_deadlocked_transaction_is_retried(
    ledger: Ledger, scenario, database_url: str
) -> None:
    """When PostgreSQL breaks a deadlock by aborting the ledger's transaction, it is rerun."""
    run = await scenario.run_in(RunState.RUNNING)
    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.connect() as other:
            task_lock = text("SELECT id FROM tasks WHERE id = :id FOR UPDATE")
            await other.execute(task_lock, {"id": run.task_id})
            transition = Transition(run.id, run.epoch, RunState.SUCCEEDED, LATER)
            recording = asyncio.create_task(ledger.record_transitions([transition]))
            await asyncio.sleep(0.3)  # the ledger holds the run and waits for the task row
            run_lock = text("SELECT id FROM runs WHERE id = :id FOR UPDATE")
            await other.execute(run_lock, {"id": run.id})  # deadlock: the ledger is aborted
            await other.rollback()
            (outcome,) = await asyncio.wait_for(recording, timeout=10)
    finally:
        await engine.dispose()
    assert outcome.applied
    assert (await ledger.get_run(run.id)).state is RunState.SUCCEEDED


async def test_hops_reported_together_are_one_write_with_every_event(
    ledger: Ledger, scenario
) -> None:
    """Started and finished in one batch: each run is written once, each hop logged in order.

    Many runs interleaved, one of them upstream of a blocked task, so the consequences of the
    final states are settled in the same transaction as well.
    """
    runs = [await scenario.run_in(RunState.ASSIGNED) for _ in range(5)]
    _, upstream = await scenario.submit()
    _, dependent = await scenario.submit(dependencies=(upstream.task_id,))
    assert upstream.id in {item.run_id for item in await scenario.claim()}
    runs.append(await scenario.move(await ledger.get_run(upstream.id), RunState.ASSIGNED))
    started = [NOW + timedelta(milliseconds=index) for index in range(len(runs))]
    batch = [
        Transition(run.id, run.epoch, RunState.RUNNING, at, worker_id="w7")
        for run, at in zip(runs, started, strict=True)
    ] + [
        Transition(run.id, run.epoch, RunState.SUCCEEDED, LATER, exit_code=0, output_tail="ok")
        for run in runs
    ]
    before = (await ledger.events_after(0, limit=10_000))[-1].id
    outcomes = await ledger.record_transitions(batch)
    assert all(outcome.applied for outcome in outcomes)
    running, finished = outcomes[: len(runs)], outcomes[len(runs) :]
    assert [o.current_state for o in running] == [RunState.RUNNING] * len(runs)
    assert [o.run.state if o.run else None for o in running] == [RunState.RUNNING] * len(runs)
    assert [o.current_state for o in finished] == [RunState.SUCCEEDED] * len(runs)
    events = await ledger.events_after(before)
    for run, at, outcome in zip(runs, started, finished, strict=True):
        stored = await ledger.get_run(run.id)
        assert outcome.run == stored
        assert (stored.state, stored.started_at, stored.finished_at) == (
            RunState.SUCCEEDED,
            at,
            LATER,
        )
        assert (stored.worker_id, stored.exit_code, stored.output_tail) == ("w7", 0, "ok")
        mine = [e for e in events if e.run_id == run.id]
        assert [(e.from_state, e.to_state, e.at, e.epoch, e.worker_id) for e in mine] == [
            (RunState.ASSIGNED, RunState.RUNNING, at, run.epoch, "w7"),
            (RunState.RUNNING, RunState.SUCCEEDED, LATER, run.epoch, "w7"),
        ]
    # The dependent is unblocked by the success, after it in the log.
    unblocked = [e for e in events if e.run_id == dependent.id]
    assert [(e.from_state, e.to_state) for e in unblocked] == [(RunState.BLOCKED, RunState.PENDING)]
    succeeded = next(e for e in events if e.run_id == upstream.id and e.to_state.is_terminal)
    assert unblocked[0].id > succeeded.id
    assert (await ledger.get_run(dependent.id)).state is RunState.PENDING


async def test_a_failure_reported_with_its_start_is_retried_once(ledger: Ledger, scenario) -> None:
    """running+failed in one batch under a retry policy: both hops logged, one next attempt."""
    policy = RetryPolicy(max_attempts=2, retry_on=frozenset({RunState.FAILED}))
    _, run = await scenario.submit(retry=policy)
    assert run.id in {item.run_id for item in await scenario.claim()}
    run = await scenario.move(await ledger.get_run(run.id), RunState.ASSIGNED)
    before = (await ledger.events_after(0, limit=10_000))[-1].id
    batch = [
        Transition(run.id, run.epoch, RunState.RUNNING, NOW, worker_id="w1"),
        Transition(run.id, run.epoch, RunState.FAILED, LATER, exit_code=3),
    ]
    started, failed = await ledger.record_transitions(batch)
    assert started.applied
    assert failed.applied
    assert started.next_attempt is None
    assert failed.next_attempt is not None
    attempts = await ledger.list_runs(run.task_id)
    assert [(a.attempt, a.state) for a in attempts] == [(1, RunState.FAILED), (2, RunState.PENDING)]
    logged = [(e.run_id, e.from_state, e.to_state) for e in await ledger.events_after(before)]
    assert logged == [
        (run.id, RunState.ASSIGNED, RunState.RUNNING),
        (run.id, RunState.RUNNING, RunState.FAILED),
        (failed.next_attempt.id, None, RunState.PENDING),
    ]
