"""The region's breakers: consecutive failures, one trial when due, kind and worker outcomes."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import uuid4

from taskmesh.common.model import RunState
from taskmesh.common.topology import BreakerConfig, RegionBreakers
from taskmesh.region.breakers import Breaker, BreakerBoard, ExecutionFailure

QUICK = BreakerConfig(fail_max=2, reset_timeout=timedelta(milliseconds=300))
PAST_RESET = 0.35  # seconds
SLOW = BreakerConfig(fail_max=2, reset_timeout=timedelta(minutes=5))


def failure() -> ExecutionFailure:
    return ExecutionFailure("boom")


def due_for_trial() -> Breaker:
    """A kind breaker opened by two failures, past its reset timeout."""
    breaker = Breaker("kind:x", QUICK)
    breaker.fail(failure())
    breaker.fail(failure())
    time.sleep(PAST_RESET)
    return breaker


def test_consecutive_failures_open_the_breaker_and_a_success_resets_the_count() -> None:
    breaker = Breaker("kind:x", SLOW)
    breaker.fail(failure())
    breaker.succeed()
    breaker.fail(failure())
    assert (breaker.state, breaker.failures, breaker.allows()) == ("closed", 1, True)
    breaker.fail(failure())
    assert (breaker.state, breaker.allows()) == ("open", False)
    remaining = breaker.seconds_to_trial()
    assert remaining is not None
    assert 0 < remaining <= 300


def test_an_open_breaker_lets_exactly_one_trial_through_once_due() -> None:
    breaker = Breaker("kind:x", QUICK)
    breaker.fail(failure())
    breaker.fail(failure())
    assert not breaker.allows()
    time.sleep(PAST_RESET)
    assert breaker.allows()
    trial = uuid4()
    breaker.begin(trial)
    assert (breaker.state, breaker.trial_running, breaker.allows()) == ("half-open", True, False)
    assert breaker.snapshot().state == "half-open"  # the cluster view shows the trial running
    breaker.succeed(trial)
    assert (breaker.state, breaker.allows(), breaker.trial_running) == ("closed", True, False)


def test_while_a_trial_runs_only_its_own_outcome_decides() -> None:
    breaker = due_for_trial()
    trial = uuid4()
    breaker.begin(trial)
    breaker.fail(failure(), uuid4())  # a run let through before it opened, failing late
    breaker.succeed(uuid4())
    assert (breaker.state, breaker.trial_running) == ("half-open", True)
    breaker.fail(failure(), trial)
    assert (breaker.state, breaker.allows(), breaker.trial_running) == ("open", False, False)


def test_a_failed_trial_opens_the_breaker_again() -> None:
    breaker = due_for_trial()
    breaker.begin(uuid4())
    breaker.fail(failure())
    assert (breaker.state, breaker.allows()) == ("open", False)


def test_a_trial_that_ends_without_an_outcome_frees_the_slot() -> None:
    breaker = due_for_trial()
    trial = uuid4()
    breaker.begin(trial)
    breaker.settle(uuid4())  # another run: no effect
    assert not breaker.allows()
    breaker.settle(trial)
    assert breaker.allows()


def test_outcomes_on_an_open_breaker_are_not_counted() -> None:
    breaker = Breaker("worker:w", SLOW)
    breaker.fail(failure())
    breaker.fail(failure())
    breaker.succeed()  # a late success of a run assigned before it opened
    assert breaker.state == "open"


def test_the_board_counts_execution_failures_per_kind_and_deliveries_per_worker() -> None:
    board = BreakerBoard(RegionBreakers(worker=SLOW, kind=SLOW))
    board.record_worker_failure("w1", "stream broke")
    for state in (RunState.FAILED, RunState.CANCELLED, RunState.TIMED_OUT):
        board.record_result(uuid4(), "flaky", "w1", state)
    board.record_result(uuid4(), "steady", "w1", RunState.SUCCEEDED)
    assert not board.kind_allows("flaky")  # failed, timed out: cancelled did not count
    assert board.kind_allows("steady")
    assert board.worker("w1").failures == 0  # delivering results resets its count
    assert [kind for kind, _ in board.kinds()] == ["flaky", "steady"]
    due = board.seconds_to_next_trial()
    assert due is not None
    assert due > 0
