"""Retries: next attempts as new pending rows, exponential capped backoff with jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.retries import backoff
from taskmesh.common.model import RetryPolicy, RunState, Transition

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario
POLICY = RetryPolicy(
    max_attempts=3,
    initial_backoff=timedelta(seconds=10),
    max_backoff=timedelta(seconds=15),
    multiplier=2.0,
    retry_on=frozenset({RunState.FAILED, RunState.TIMED_OUT}),
)


@pytest.mark.parametrize(
    ("attempt", "jitter", "seconds"),
    [(1, 0.0, 5.0), (1, 0.5, 7.5), (1, 0.999, 9.995), (2, 0.5, 11.25), (9, 0.0, 7.5)],
)
def test_backoff_is_exponential_capped_and_jittered(
    attempt: int, jitter: float, seconds: float
) -> None:
    """initial·multiplier^(attempt-1), capped at max_backoff, scaled into [½, 1)."""
    assert backoff(POLICY, attempt, lambda: jitter).total_seconds() == pytest.approx(seconds)


def test_backoff_survives_huge_attempts() -> None:
    """No float overflow for absurd attempt numbers: the cap holds."""
    policy = RetryPolicy(initial_backoff=timedelta(seconds=1), max_backoff=timedelta(hours=1))
    assert backoff(policy, 100_000, lambda: 0.0) == timedelta(minutes=30)


def test_zero_backoff_stays_zero() -> None:
    """A policy without backoff retries at once."""
    policy = RetryPolicy(initial_backoff=timedelta(0), max_backoff=timedelta(0))
    assert backoff(policy, 3, lambda: 0.5) == timedelta(0)


async def _fail(scenario, run, target: RunState = RunState.FAILED, at: datetime = NOW):
    """Take a pending run through a claim to ``target``; returns the outcome."""
    claimed = await scenario.ledger.claim_due_runs({"r1": 10}, at)
    assert run.id in {c.run_id for c in claimed}
    run = await scenario.ledger.get_run(run.id)
    run = await scenario.move(run, RunState.ASSIGNED, RunState.RUNNING)
    transition = Transition(run.id, run.epoch, target, at, exit_code=1)
    (outcome,) = await scenario.ledger.record_transitions([transition])
    return outcome


async def test_failure_creates_next_attempts_until_max(ledger: Ledger, scenario) -> None:
    """Attempts 2 and 3 are created with backoff; attempt 3 failing is final."""
    _, run = await scenario.submit(retry=POLICY)
    first = await _fail(scenario, run)
    second = first.next_attempt
    assert second is not None
    assert (second.attempt, second.state, second.due_at, second.epoch) == (
        2,
        RunState.PENDING,
        run.due_at,
        0,
    )
    assert second.ready_at == NOW + timedelta(seconds=7.5)
    event = next(e for e in await ledger.events_after(0) if e.run_id == second.id)
    assert event.detail["backoff_seconds"] == 7.5
    assert event.detail["retry_of"] == str(run.id)
    assert await ledger.claim_due_runs({"r1": 10}, NOW + timedelta(seconds=7)) == []
    later = NOW + timedelta(seconds=8)
    third = (await _fail(scenario, second, at=later)).next_attempt
    assert third is not None
    assert third.attempt == 3
    assert third.ready_at == later + timedelta(seconds=11.25)
    final = await _fail(scenario, third, at=NOW + timedelta(minutes=1))
    assert final.next_attempt is None
    attempts = await ledger.list_runs(run.task_id)
    assert [(r.attempt, r.state) for r in attempts] == [
        (1, RunState.FAILED),
        (2, RunState.FAILED),
        (3, RunState.FAILED),
    ]
    assert (await ledger.latest_run(run.task_id)) == attempts[-1]


async def test_outcomes_outside_retry_on_are_final(ledger: Ledger, scenario) -> None:
    """The default policy retries nothing; succeeded and cancelled are never retried."""
    _, run = await scenario.submit()
    assert (await _fail(scenario, run)).next_attempt is None
    _, run = await scenario.submit(retry=POLICY)
    assert (await _fail(scenario, run, RunState.SUCCEEDED)).next_attempt is None
    _, run = await scenario.submit(retry=POLICY)
    assert (await _fail(scenario, run, RunState.CANCELLED)).next_attempt is None


async def test_timed_out_is_retried_when_listed(ledger: Ledger, scenario) -> None:
    """timed_out follows the policy like failed."""
    _, run = await scenario.submit(retry=POLICY)
    outcome = await _fail(scenario, run, RunState.TIMED_OUT)
    assert outcome.next_attempt is not None
    assert outcome.next_attempt.attempt == 2


async def test_lost_is_retried_by_default_up_to_the_limit(ledger: Ledger, scenario) -> None:
    """Lost attempts are retried while attempt <= lost_retry_limit, regardless of policy."""
    _, run = await scenario.submit(region="r1")
    for attempt in (1, 2):
        claimed = await ledger.claim_due_runs({"r1": 10}, NOW + timedelta(hours=attempt))
        assert [c.attempt for c in claimed] == [attempt]
        running = await scenario.move(
            await ledger.get_run(claimed[0].run_id), RunState.ASSIGNED, RunState.RUNNING
        )
        lost = Transition(running.id, running.epoch, RunState.LOST, NOW + timedelta(hours=attempt))
        (outcome,) = await ledger.record_transitions([lost], lost_retry_limit=1)
        assert (outcome.next_attempt is not None) == (attempt == 1)
    retry = (await ledger.list_runs(run.task_id))[1]
    assert retry.region == "r1"
