"""Recurring (cron and interval) tasks: where their fires stand, and replacing a fire.

The materialiser reads every active recurring task with its latest fire in one query, and
creates runs through ``submission.materialise_runs`` (idempotent by the runs' unique key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Select, and_, func, select, true
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger import retries, submission
from taskmesh.common.ledger.changes import LOCK_EARLIER_FIRES, NON_TERMINAL_STATES, lock
from taskmesh.common.ledger.control import cancel_locked
from taskmesh.common.ledger.reads import task_select
from taskmesh.common.ledger.rows import Row, task_from_row
from taskmesh.common.ledger.schema import runs, tasks
from taskmesh.common.model import Cancellation, RecurringTask, Run

RECURRING_KINDS = ("cron", "interval")
REPLACE_CAUSE = "overlap_replace"


def _recurring_query() -> Select[Any]:
    """Active recurring tasks with their latest fire time and how that fire stands."""
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
    return (
        task_select()
        .add_columns(latest.c.due_at.label("last_due_at"), *fire.c)
        .select_from(tasks.outerjoin(latest, true()).outerjoin(fire, true()))
        .where(tasks.c.schedule_kind.in_(RECURRING_KINDS), tasks.c.paused.is_(False))
        .order_by(tasks.c.created_at, tasks.c.id)
    )


def _recurring_from_row(row: Row) -> RecurringTask:
    """A ``RecurringTask`` from a row of ``_recurring_query``."""
    return RecurringTask(
        task=task_from_row(row),
        last_due_at=row["last_due_at"],
        unfinished=bool(row["unfinished"]),
        last_finished_at=row["last_finished_at"],
    )


async def recurring_tasks(connection: AsyncConnection) -> list[RecurringTask]:
    """Every unpaused cron and interval task with where its fires stand, oldest task first."""
    result = await connection.execute(_recurring_query())
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
    materialiser can never cancel the fire it is replacing with.
    """
    states = sorted(str(state) for state in NON_TERMINAL_STATES)
    locked = await lock(
        connection, LOCK_EARLIER_FIRES, task_id=task_id, states=states, before=due_at
    )
    cancellation = await cancel_locked(
        connection, task_id, locked, now, jitter, cause=REPLACE_CAUSE
    )
    created = await submission.materialise_runs(connection, task_id, [due_at], now)
    return cancellation, created
