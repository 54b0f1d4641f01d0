"""An operator's retry: one more attempt for a task whose latest attempt ended without success.

Ledger semantics (``Ledger.retry_task``), in one transaction:

- The task row is locked ``FOR NO KEY UPDATE`` first, so two retries of one task (or a retry and
  the end of an attempt) serialize: the second sees the first's new attempt and is refused.
- Only a task whose latest attempt is terminal and not ``succeeded`` (``failed``, ``timed_out``,
  ``cancelled``, ``upstream_failed``, ``lost``) may be retried; a succeeded task, an active one
  (``blocked`` to ``running``) or one with no run yet is a ``ConflictError`` saying why.
- The new attempt belongs to the same run (same ``due_at``) with ``attempt + 1``, the task's
  current priority and region, ready at once (never before its due time), and an event with
  ``cause: retry`` and ``retry_of`` naming the attempt it follows. It is ``pending`` when
  every dependency has succeeded, ``blocked`` while one is unfinished; a dependency that ended
  without success is a ``ConflictError`` (retry that one first).
- Descendants whose latest attempt is ``upstream_failed`` get a new ``blocked`` attempt too (when
  all their other dependencies have succeeded or are being retried), so a retried step of a
  workflow carries the rest of the workflow with it once it succeeds.
- The automatic retry policy counts attempts of a run: after a manual retry it adds no further
  attempts once ``max_attempts`` is used up.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import ConflictError
from taskmesh.common.ledger import reads
from taskmesh.common.ledger.changes import notify_pending
from taskmesh.common.ledger.creation import NewRun, insert_runs
from taskmesh.common.ledger.dependencies import Readiness, lock_finished_tasks, readiness
from taskmesh.common.ledger.rows import as_uuid
from taskmesh.common.model import RetriedTask, Run, RunState

RETRYABLE = frozenset(
    {
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.UPSTREAM_FAILED,
        RunState.LOST,
    }
)
NEXT_STATE = {Readiness.READY: RunState.PENDING, Readiness.WAITING: RunState.BLOCKED}

DESCENDANTS = text("""
    WITH RECURSIVE below(task_id) AS (
        SELECT task_id FROM task_dependencies WHERE depends_on = :task_id
        UNION
        SELECT d.task_id FROM task_dependencies AS d JOIN below ON d.depends_on = below.task_id
    )
    SELECT b.task_id, t.priority, t.region, latest.id AS run_id, latest.state, latest.attempt,
           latest.due_at,
           ARRAY(SELECT d.depends_on FROM task_dependencies AS d
                 WHERE d.task_id = b.task_id
                   AND NOT EXISTS (SELECT 1 FROM runs AS s
                                   WHERE s.task_id = d.depends_on AND s.state = 'succeeded'))
               AS unfinished
    FROM below AS b
    JOIN tasks AS t ON t.id = b.task_id
    CROSS JOIN LATERAL (
        SELECT * FROM runs AS r WHERE r.task_id = b.task_id
        ORDER BY r.due_at DESC, r.attempt DESC LIMIT 1
    ) AS latest
    ORDER BY b.task_id
""")


def _refusal(task_id: UUID, latest: Run | None) -> ConflictError:
    """Why the task's latest attempt may not be retried."""
    if latest is None:
        return ConflictError(f"task {task_id} has no run to retry yet")
    if latest.state is RunState.SUCCEEDED:
        return ConflictError(f"task {task_id} already succeeded; submit it again to rerun it")
    return ConflictError(
        f"task {task_id} is still active (its latest run is {latest.state}); "
        "cancel it first or wait for it to end"
    )


def _next_attempt(ended: Mapping[Any, Any], state: RunState, now: datetime) -> NewRun:
    """The attempt after ``ended`` (task_id, priority, region, run_id, state, attempt, due_at)."""
    return NewRun(
        task_id=as_uuid(ended["task_id"]),
        due_at=ended["due_at"],
        attempt=ended["attempt"] + 1,
        state=state,
        priority=ended["priority"],
        region=ended["region"],
        ready_at=max(now, ended["due_at"]),
        created_at=now,
        detail={"cause": "retry", "retry_of": str(ended["run_id"]), "outcome": ended["state"]},
    )


async def _requeued_descendants(
    connection: AsyncConnection, task_id: UUID, now: datetime
) -> list[NewRun]:
    """New blocked attempts for the upstream_failed descendants the retry can revive."""
    rows = (await connection.execute(DESCENDANTS, {"task_id": task_id})).mappings().all()
    await lock_finished_tasks(connection, [as_uuid(row["task_id"]) for row in rows])
    revived: dict[UUID, Mapping[Any, Any]] = {}
    changed = True
    while changed:  # a fixpoint over the (small) descendant graph
        changed = False
        for row in rows:
            descendant = as_uuid(row["task_id"])
            if descendant in revived or row["state"] != str(RunState.UPSTREAM_FAILED):
                continue
            if {as_uuid(value) for value in row["unfinished"]} <= {task_id, *revived}:
                revived[descendant] = row
                changed = True
    return [_next_attempt(row, RunState.BLOCKED, now) for row in revived.values()]


async def retry_task(connection: AsyncConnection, task_id: UUID, now: datetime) -> RetriedTask:
    """Create the next attempt of a task whose latest attempt ended without success."""
    await lock_finished_tasks(connection, [task_id])
    task = await reads.get_task(connection, task_id)  # NotFoundError for an unknown task
    latest = await reads.latest_run(connection, task_id)
    if latest is None or latest.state not in RETRYABLE:
        raise _refusal(task_id, latest)
    ready = await readiness(connection, task.spec.dependencies)
    if ready is Readiness.DOOMED:
        raise ConflictError(
            f"task {task_id} depends on a task that ended without success; retry that one first"
        )
    ended = {
        "task_id": task_id,
        "priority": task.spec.priority,
        "region": task.spec.region,
        "run_id": latest.id,
        "state": str(latest.state),
        "attempt": latest.attempt,
        "due_at": latest.due_at,
    }
    own = _next_attempt(ended, NEXT_STATE[ready], now)
    created = await insert_runs(
        connection, [own, *await _requeued_descendants(connection, task_id, now)]
    )
    mine = next((run for run in created if run.task_id == task_id), None)
    if mine is None:  # the task lock makes this unreachable; never report a retry not made
        raise ConflictError(f"task {task_id} was retried concurrently")
    await notify_pending(connection, [mine], now)
    return RetriedTask(task_id, mine, tuple(run for run in created if run.task_id != task_id))
