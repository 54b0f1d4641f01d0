"""The dependency graph: whether a task's dependencies allow it to run, unblocking, failing.

Race-freedom with concurrent submits: a submit locks its dependency tasks ``FOR SHARE`` before
it reads their state; a transaction that finishes a task's attempt locks that task
``FOR NO KEY UPDATE`` before it looks for dependents. Whichever comes second sees the other's
committed work in its next statement, so no dependent can stay blocked forever.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import NotFoundError
from taskmesh.common.ledger.changes import LOCKED_COLUMNS, Change, lock, write_changes
from taskmesh.common.ledger.rows import as_uuid
from taskmesh.common.ledger.schema import TERMINAL
from taskmesh.common.model import Run, RunState


class Readiness(enum.Enum):
    """What a task's dependencies allow for its next run."""

    READY = "ready"  # every dependency has succeeded
    WAITING = "waiting"  # some dependency is unfinished
    DOOMED = "doomed"  # some dependency ended without success and will not run again


SHARE_TASKS = text("""
    SELECT id FROM tasks WHERE id = ANY(CAST(:task_ids AS uuid[])) ORDER BY id FOR SHARE
""")

LOCK_TASKS = text("""
    SELECT id FROM tasks WHERE id = ANY(CAST(:task_ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE
""")

DEPENDENCY_STATES = text(f"""
    SELECT t.id,
           EXISTS (SELECT 1 FROM runs AS r WHERE r.task_id = t.id AND r.state = 'succeeded')
               AS succeeded,
           EXISTS (SELECT 1 FROM runs AS r WHERE r.task_id = t.id)
           AND NOT EXISTS (SELECT 1 FROM runs AS r
                           WHERE r.task_id = t.id AND r.state NOT IN ({TERMINAL}))
               AS ended
    FROM tasks AS t WHERE t.id = ANY(CAST(:task_ids AS uuid[]))
""")

LOCK_BLOCKED_DEPENDENTS = text(f"""
    SELECT {LOCKED_COLUMNS}
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.state = 'blocked'
      AND r.task_id IN (SELECT task_id FROM task_dependencies
                        WHERE depends_on = ANY(CAST(:task_ids AS uuid[])))
    ORDER BY r.id
    FOR UPDATE OF r
""")

ALL_DEPENDENCIES_SUCCEEDED = text("""
    SELECT c.task_id FROM unnest(CAST(:task_ids AS uuid[])) AS c(task_id)
    WHERE NOT EXISTS (
        SELECT 1 FROM task_dependencies AS d
        WHERE d.task_id = c.task_id
          AND NOT EXISTS (SELECT 1 FROM runs AS s
                          WHERE s.task_id = d.depends_on AND s.state = 'succeeded'))
""")

LOCK_BLOCKED_DESCENDANTS = text(f"""
    WITH RECURSIVE doomed(task_id) AS (
        SELECT task_id FROM task_dependencies WHERE depends_on = ANY(CAST(:task_ids AS uuid[]))
        UNION
        SELECT d.task_id FROM task_dependencies AS d JOIN doomed ON d.depends_on = doomed.task_id
    )
    SELECT {LOCKED_COLUMNS}
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.state = 'blocked' AND r.task_id IN (SELECT task_id FROM doomed)
    ORDER BY r.id
    FOR UPDATE OF r
""")


async def readiness(connection: AsyncConnection, dependencies: Sequence[UUID]) -> Readiness:
    """Lock the dependency tasks against concurrent finishing and say what they allow."""
    if not dependencies:
        return Readiness.READY
    wanted = sorted(set(dependencies))
    found = await connection.execute(SHARE_TASKS, {"task_ids": wanted})
    missing = set(wanted) - {as_uuid(row.id) for row in found}
    if missing:
        names = ", ".join(sorted(str(task_id) for task_id in missing))
        raise NotFoundError(f"dependency task(s) not found: {names}")
    states = (await connection.execute(DEPENDENCY_STATES, {"task_ids": wanted})).all()
    if all(row.succeeded for row in states):
        return Readiness.READY
    if any(row.ended and not row.succeeded for row in states):
        return Readiness.DOOMED
    return Readiness.WAITING


async def lock_finished_tasks(connection: AsyncConnection, task_ids: Collection[UUID]) -> None:
    """Serialize with submits that read these tasks' state (see the module docstring)."""
    if task_ids:
        await connection.execute(LOCK_TASKS, {"task_ids": sorted(task_ids)})


async def unblock_dependents(
    connection: AsyncConnection, succeeded_task_ids: Collection[UUID], at: datetime
) -> list[Run]:
    """Move blocked attempts whose dependencies have all succeeded to pending."""
    if not succeeded_task_ids:
        return []
    blocked = await lock(connection, LOCK_BLOCKED_DEPENDENTS, task_ids=sorted(succeeded_task_ids))
    candidates = sorted({item.run.task_id for item in blocked.values()})
    if not candidates:
        return []
    ready_rows = await connection.execute(ALL_DEPENDENCIES_SUCCEEDED, {"task_ids": candidates})
    ready = {as_uuid(row.task_id) for row in ready_rows}
    changes = [
        Change(item, replace(item.run, state=RunState.PENDING), at, {"cause": "unblocked"})
        for item in blocked.values()
        if item.run.task_id in ready
    ]
    return await write_changes(connection, changes)


async def fail_descendants(
    connection: AsyncConnection, failed_task_ids: Collection[UUID], at: datetime
) -> list[Run]:
    """Move every blocked attempt downstream of the failed tasks to upstream_failed."""
    if not failed_task_ids:
        return []
    ids = sorted(failed_task_ids)
    doomed = await lock(connection, LOCK_BLOCKED_DESCENDANTS, task_ids=ids)
    error = "an upstream task ended without success"
    detail = {"cause": "upstream_failed", "failed_task_ids": [str(task_id) for task_id in ids]}
    changes = [
        Change(
            item,
            replace(item.run, state=RunState.UPSTREAM_FAILED, finished_at=at, error=error),
            at,
            detail,
        )
        for item in doomed.values()
    ]
    return await write_changes(connection, changes)
