"""Retry policy of execution outcomes: whether an ended attempt gets a next one, and when."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

from taskmesh.common.ledger.changes import Locked
from taskmesh.common.ledger.creation import NewRun
from taskmesh.common.model import RetryPolicy, Run, RunState

# Outcomes a policy may retry; succeeded, cancelled and upstream_failed never are.
RETRYABLE_OUTCOMES = frozenset({RunState.FAILED, RunState.TIMED_OUT, RunState.LOST})
DEFAULT_LOST_RETRY_LIMIT = 3

Jitter = Callable[[], float]  # a uniform random number in [0, 1)


def backoff(policy: RetryPolicy, attempt: int, jitter: Jitter) -> timedelta:
    """The wait after ``attempt`` failed: exponential, capped, with "equal jitter".

    ``initial · multiplier^(attempt-1)``, capped at ``max_backoff``, then scaled into
    ``[½, 1)`` of itself so retries of many runs that failed together spread out.
    """
    initial = policy.initial_backoff.total_seconds()
    cap = policy.max_backoff.total_seconds()
    if initial <= 0:
        return timedelta(0)
    growth = (attempt - 1) * math.log(policy.multiplier)
    capped = cap if growth >= math.log(cap / initial) else initial * math.exp(growth)
    return timedelta(seconds=capped * (0.5 + jitter() / 2))


def is_retried(locked: Locked, ended: Run, lost_retry_limit: int) -> bool:
    """True when the ended attempt gets a next one.

    The task's policy decides for the outcomes it lists. ``lost`` (the worker or region died,
    not the command) is retried by default while ``attempt <= lost_retry_limit``.
    """
    policy = locked.retry
    if ended.state not in RETRYABLE_OUTCOMES:
        return False
    if ended.state in policy.retry_on and ended.attempt < policy.max_attempts:
        return True
    return ended.state is RunState.LOST and ended.attempt <= lost_retry_limit


def next_attempt(locked: Locked, ended: Run, jitter: Jitter) -> NewRun:
    """The pending attempt that follows ``ended``, ready after its backoff."""
    wait = backoff(locked.retry, ended.attempt, jitter)
    at = ended.finished_at or ended.created_at
    return NewRun(
        task_id=ended.task_id,
        due_at=ended.due_at,
        attempt=ended.attempt + 1,
        state=RunState.PENDING,
        priority=ended.priority,
        region=locked.task_region,
        ready_at=at + wait,
        created_at=at,
        detail={
            "retry_of": str(ended.id),
            "outcome": str(ended.state),
            "backoff_seconds": wait.total_seconds(),
        },
    )
