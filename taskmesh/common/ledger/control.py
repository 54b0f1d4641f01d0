"""Operator actions on runs: reprioritise, cancel, and reap a dead region."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from uuid import UUID

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import ConflictError, NotFoundError, ValidationError
from taskmesh.common.ledger import membership, pausing, reads, retries, transitions
from taskmesh.common.ledger.changes import (
    LOCK_BY_REGION,
    LOCK_BY_TASK,
    NON_TERMINAL_STATES,
    Change,
    Locked,
    lock,
    notify_pending,
)
from taskmesh.common.ledger.rows import run_from_row
from taskmesh.common.ledger.schema import IN_FLIGHT_STATES, runs, tasks
from taskmesh.common.model import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    Cancellation,
    ReapResult,
    Run,
    RunState,
)

CANCELLED_HERE = frozenset({RunState.BLOCKED, RunState.PENDING})


async def set_priority(connection: AsyncConnection, task_id: UUID, priority: int) -> list[Run]:
    """Change a task's priority and its unfinished attempts'; returns those attempts."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValidationError(
            "priority", f"must be between {PRIORITY_MIN} and {PRIORITY_MAX}, got {priority}"
        )
    found = await connection.execute(
        update(tasks).where(tasks.c.id == task_id).values(priority=priority).returning(tasks.c.id)
    )
    if found.first() is None:
        raise NotFoundError(f"task {task_id} not found")
    query = (
        update(runs)
        .where(runs.c.task_id == task_id, runs.c.state.in_(sorted(NON_TERMINAL_STATES)))
        .values(priority=priority)
        .returning(runs)
    )
    changed = [run_from_row(row) for row in (await connection.execute(query)).mappings()]
    return sorted(changed, key=lambda run: (run.due_at, run.attempt))


async def _nothing_to_cancel(connection: AsyncConnection, task_id: UUID) -> ConflictError:
    """The error for a cancel that found no unfinished attempt (or no task)."""
    latest = await reads.latest_run(connection, task_id)
    if latest is None:
        await reads.get_task(connection, task_id)  # NotFoundError for an unknown task
        return ConflictError(f"task {task_id} has no runs to cancel")
    return ConflictError(
        f"task {task_id} has no unfinished runs to cancel: its latest run is {latest.state}"
    )


def _cancelled(item: Locked, now: datetime, cause: str) -> Change:
    """The change that cancels a blocked or pending attempt."""
    after = replace(item.run, state=RunState.CANCELLED, finished_at=now, error="cancelled")
    return Change(item, after, now, {"cause": cause})


async def cancel_locked(
    connection: AsyncConnection,
    task_id: UUID,
    locked: dict[UUID, Locked],
    now: datetime,
    jitter: retries.Jitter,
    *,
    cause: str,
) -> Cancellation:
    """Cancel the locked blocked/pending attempts; return the locked in-flight ones to forward."""
    here = [
        _cancelled(item, now, cause) for item in locked.values() if item.run.state in CANCELLED_HERE
    ]
    cancelled = list((await transitions.apply(connection, here)).values())
    ended = [(locked[run.id], run) for run in cancelled]
    await transitions.settle(connection, ended, jitter, lost_retry_limit=0)
    to_forward = [item.run for item in locked.values() if item.run.state in IN_FLIGHT_STATES]
    return Cancellation(task_id, _by_due(cancelled), _by_due(to_forward))


async def _stop_schedule(connection: AsyncConnection, task_id: UUID) -> bool:
    """Pause a recurring task's schedule for good; True when it was firing until now."""
    paused = await pausing.lock_task(connection, task_id)
    if paused or not pausing.is_recurring(await reads.get_task(connection, task_id)):
        return False
    await pausing.set_paused(connection, task_id, True)
    return True


async def cancel_task(
    connection: AsyncConnection, task_id: UUID, now: datetime, jitter: retries.Jitter
) -> Cancellation:
    """Cancel what the ledger holds; return what regions hold, for the master to forward.

    A recurring task's schedule is paused as well, so it gets no new runs; cancelling is a
    conflict only when there is neither an unfinished run nor a firing schedule to stop.
    """
    stopped = await _stop_schedule(connection, task_id)
    states = sorted(str(state) for state in NON_TERMINAL_STATES)
    locked = await lock(connection, LOCK_BY_TASK, task_id=task_id, states=states)
    if not locked and not stopped:
        raise await _nothing_to_cancel(connection, task_id)
    return await cancel_locked(connection, task_id, locked, now, jitter, cause="cancel_task")


def _by_due(attempts: list[Run]) -> tuple[Run, ...]:
    """Attempts in fire-time order."""
    return tuple(sorted(attempts, key=lambda run: (run.due_at, run.attempt)))


# A worker may have started an assigned run whose start its region never recorded (the region
# froze or died first): to be safe it is lost, never re-delegated as if it had not run.
MAYBE_STARTED = frozenset({RunState.ASSIGNED, RunState.RUNNING})


def _reaped(item: Locked, region: str, now: datetime) -> Change:
    """The change that takes an attempt back from a dead region."""
    run, detail = item.run, {"cause": "region_lost", "region": region}
    if run.state in MAYBE_STARTED:
        error = f"region {region} stopped heartbeating while this run was {run.state}"
        lost = replace(run, state=RunState.LOST, finished_at=now, error=error)
        return Change(item, lost, now, detail)
    # Back to its task's region: a strict run waits for it, a prefer run spills to its
    # fallbacks while it is down and returns home once it is back.
    requeued = replace(
        run, state=RunState.PENDING, epoch=run.epoch + 1, worker_id=None, region=item.task_region
    )
    return Change(item, requeued, now, detail)


async def reap_region(
    connection: AsyncConnection,
    region: str,
    now: datetime,
    jitter: retries.Jitter,
    lost_retry_limit: int,
    *,
    started_only: bool = False,
) -> ReapResult:
    """Take back a dead region's attempts: delegated ones to pending, assigned or running lost.

    ``started_only`` leaves the delegated ones alone (a restarting region takes back only what
    its previous process may have started; see ``taskmesh.region.orphans``).
    """
    reaped = MAYBE_STARTED if started_only else IN_FLIGHT_STATES
    states = sorted(str(state) for state in reaped)
    locked = await lock(connection, LOCK_BY_REGION, region=region, states=states)
    reaped_changes = [_reaped(item, region, now) for item in locked.values()]
    moved = list((await transitions.apply(connection, reaped_changes)).values())
    lost = [run for run in moved if run.state is RunState.LOST]
    ended = [(locked[run.id], run) for run in lost]
    settlement = await transitions.settle(connection, ended, jitter, lost_retry_limit)
    await membership.mark_region_down(connection, region)
    requeued = [run for run in moved if run.state is RunState.PENDING]
    await notify_pending(connection, [*requeued, *settlement.retries.values()], now)
    return ReapResult(
        region, _by_due(requeued), _by_due(lost), _by_due(list(settlement.retries.values()))
    )
