"""Recurring (cron and interval) tasks: where their fires stand, replacing a fire, pausing.

The materialiser reads every active recurring task with its latest fire in one query, and
creates runs through ``submission.materialise_runs`` (idempotent by the runs' unique key).
Pausing stops new fires and cancels the fires materialised ahead of their due time; resuming
clears the flag, and the materialiser then treats the fires missed meanwhile as misfires.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger import reads, retries, submission
from taskmesh.common.ledger.changes import (
    LOCK_BY_TASK,
    LOCK_EARLIER_FIRES,
    NON_TERMINAL_STATES,
    lock,
)
from taskmesh.common.ledger.control import CANCELLED_HERE, cancel_locked
from taskmesh.common.ledger.pausing import RECURRING_KINDS, check_recurring, lock_task, set_paused
from taskmesh.common.ledger.reads import task_select
from taskmesh.common.ledger.rows import Row, task_from_row
from taskmesh.common.ledger.schema import runs, tasks
from taskmesh.common.model import Cancellation, RecurringTask, Run, Task

REPLACE_CAUSE = "overlap_replace"
PAUSE_CAUSE = "paused"


def _recurring_query(include_paused: bool) -> Select[Any]:
    """Recurring tasks with their latest fire time and how that fire stands."""
    latest = (
        select(runs.c.due_at)
        .where(runs.c.task_id == tasks.c.id)
        .order_by(runs.c.due_at.desc())
        .limit(1)
        .lateral("latest")
    )
    unfinished = runs.c.state.in_(sorted(str(state) for state in NON_TERMINAL_STATES))
    fire = (
        select(
            func.coalesce(func.bool_or(unfinished), False).label("unfinished"),
            func.max(runs.c.finished_at).label("last_finished_at"),
        )
        .where(and_(runs.c.task_id == tasks.c.id, runs.c.due_at == latest.c.due_at))
        .lateral("fire")
    )
    query = (
        task_select()
        .add_columns(latest.c.due_at.label("last_due_at"), *fire.c)
        .select_from(tasks.outerjoin(latest, true()).outerjoin(fire, true()))
        .where(tasks.c.schedule_kind.in_(RECURRING_KINDS))
        .order_by(tasks.c.created_at, tasks.c.id)
    )
    return query if include_paused else query.where(tasks.c.paused.is_(False))


def _recurring_from_row(row: Row) -> RecurringTask:
    """A ``RecurringTask`` from a row of ``_recurring_query``."""
    return RecurringTask(
        task=task_from_row(row),
        last_due_at=row["last_due_at"],
        unfinished=bool(row["unfinished"]),
        last_finished_at=row["last_finished_at"],
        resumed_at=row["resumed_at"],
    )


async def recurring_tasks(
    connection: AsyncConnection, include_paused: bool = False
) -> list[RecurringTask]:
    """Every (unpaused) cron and interval task with where its fires stand, oldest task first."""
    result = await connection.execute(_recurring_query(include_paused))
    return [_recurring_from_row(row) for row in result.mappings()]


async def replace_runs(
    connection: AsyncConnection,
    task_id: UUID,
    due_at: datetime,
    now: datetime,
    jitter: retries.Jitter,
) -> tuple[Cancellation, list[Run]]:
    """Cancel the unfinished attempts of earlier fires and create the fire at ``due_at``.

    Blocked and pending attempts are cancelled here; in-flight ones are returned for the
    master to forward to their regions. Only fires before ``due_at`` are touched, so a racing
    materialiser can never cancel the fire it is replacing with; a task paused (or cancelled)
    since the pass read it is left alone.
    """
    if await lock_task(connection, task_id, share=True):  # paused since the pass read it
        return Cancellation(task_id), []
    states = sorted(str(state) for state in NON_TERMINAL_STATES)
    locked = await lock(
        connection, LOCK_EARLIER_FIRES, task_id=task_id, states=states, before=due_at
    )
    cancellation = await cancel_locked(
        connection, task_id, locked, now, jitter, cause=REPLACE_CAUSE
    )
    created = await submission.materialise_runs(connection, task_id, [due_at], now)
    return cancellation, created


async def pause_schedule(
    connection: AsyncConnection, task_id: UUID, now: datetime, jitter: retries.Jitter
) -> tuple[Task, Cancellation]:
    """Stop a schedule's fires and cancel its blocked/pending fires not due yet; idempotent.

    Fires already due are left alone: they were due before the pause. In-flight attempts are
    not touched (cancel the task to stop those too).
    """
    await lock_task(connection, task_id)
    task = await reads.get_task(connection, task_id)
    check_recurring(task, "pause")
    await set_paused(connection, task_id, True)
    states = sorted(str(state) for state in CANCELLED_HERE)
    waiting = await lock(connection, LOCK_BY_TASK, task_id=task_id, states=states)
    ahead = {run_id: item for run_id, item in waiting.items() if item.run.due_at > now}
    cancellation = await cancel_locked(connection, task_id, ahead, now, jitter, cause=PAUSE_CAUSE)
    return await reads.get_task(connection, task_id), cancellation


async def resume_schedule(connection: AsyncConnection, task_id: UUID, now: datetime) -> Task:
    """Let a paused schedule fire again; idempotent (resuming a running schedule changes nothing).

    ``resumed_at`` is set to ``now``: fires that fell due while paused are misfires, however
    recent, and follow the misfire policy.
    """
    was_paused = await lock_task(connection, task_id)
    check_recurring(await reads.get_task(connection, task_id), "resume")
    if was_paused:
        await set_paused(connection, task_id, False, resumed_at=now)
    return await reads.get_task(connection, task_id)
