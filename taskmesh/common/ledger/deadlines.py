"""Schedule-to-start deadlines: attempts that did not start in time end ``timed_out``.

A region checks the bound when it pops a run from its queue, but a run can miss it while it
still waits in the ledger (``pending``: no region had credit) or in a saturated region's queue
(``delegated``). The master's start-deadline duty sweeps those here. A delegated run timed out
here stays in its region's queue until popped; the region then finds it past its bound too and
drops it (its own ``timed_out`` write is refused as a duplicate).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger import retries, transitions
from taskmesh.common.ledger.schema import sql_list
from taskmesh.common.model import (
    NOT_STARTED_IN_TIME,
    RunState,
    Transition,
    TransitionOutcome,
)

UNSTARTED_STATES = frozenset({RunState.PENDING, RunState.DELEGATED})
SWEEP_LIMIT = 500  # attempts timed out per statement; the next pass continues

OVERDUE = text(f"""
    SELECT r.id, r.epoch
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.state IN ({sql_list(UNSTARTED_STATES)})
      AND t.schedule_to_start_timeout IS NOT NULL
      AND r.due_at + t.schedule_to_start_timeout < CAST(:now AS timestamptz)
    ORDER BY r.due_at
    LIMIT :limit
    FOR UPDATE OF r SKIP LOCKED
""")


async def time_out_unstarted(
    connection: AsyncConnection, now: datetime, jitter: retries.Jitter, limit: int = SWEEP_LIMIT
) -> list[TransitionOutcome]:
    """Move attempts past their schedule-to-start bound to ``timed_out``, with consequences.

    Consequences as for any terminal outcome: the retry policy may create the next attempt
    (when it lists ``timed_out``), otherwise dependents become ``upstream_failed``.
    """
    rows = (await connection.execute(OVERDUE, {"now": now, "limit": limit})).all()
    batch = [
        Transition(row.id, row.epoch, RunState.TIMED_OUT, now, error=NOT_STARTED_IN_TIME)
        for row in rows
    ]
    detail = {"cause": "schedule_to_start_timeout"}
    return await transitions.record(connection, batch, jitter, 0, detail)
