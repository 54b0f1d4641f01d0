"""Whether a recurring task's schedule fires: the ``paused`` flag, read and written under lock.

Pausing, cancelling and materialising serialise on the task row: writers of the flag take it
``FOR NO KEY UPDATE`` and the materialiser ``FOR SHARE``, so a fire is never created after a
pause or a cancel has committed, and a cancel sees every fire committed before it.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import ConflictError, NotFoundError
from taskmesh.common.ledger.schema import tasks
from taskmesh.common.model import CronSchedule, IntervalSchedule, Task

RECURRING_KINDS = ("cron", "interval")


async def lock_task(connection: AsyncConnection, task_id: UUID, *, share: bool = False) -> bool:
    """Lock a task row; returns whether it is paused. ``NotFoundError`` for an unknown task."""
    query = select(tasks.c.paused).where(tasks.c.id == task_id)
    query = query.with_for_update(read=share, key_share=not share)
    paused = (await connection.execute(query)).scalar_one_or_none()
    if paused is None:
        raise NotFoundError(f"task {task_id} not found")
    return bool(paused)


def is_recurring(task: Task) -> bool:
    """True for a cron or interval task: the only kind with a schedule to pause."""
    return isinstance(task.spec.schedule, CronSchedule | IntervalSchedule)


def check_recurring(task: Task, action: str) -> None:
    """Refuse to pause or resume a task that has no cron or interval schedule."""
    if not is_recurring(task):
        raise ConflictError(
            f"task {task.id} has no cron or interval schedule to {action}; "
            "cancel a one-shot task instead"
        )


async def set_paused(
    connection: AsyncConnection, task_id: UUID, paused: bool, *, resumed_at: datetime | None = None
) -> None:
    """Write the flag of a locked task (and, on resume, when it resumed)."""
    values: dict[str, object] = {"paused": paused}
    if resumed_at is not None:
        values["resumed_at"] = resumed_at
    await connection.execute(update(tasks).where(tasks.c.id == task_id).values(**values))
