"""Creating attempts: many ``runs`` rows and their creation events in one statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger.rows import as_json, run_from_row
from taskmesh.common.model import Run, RunState


@dataclass(frozen=True, slots=True)
class NewRun:
    """An attempt to create; ``(task_id, due_at, attempt)`` is its unique key."""

    task_id: UUID
    due_at: datetime
    attempt: int
    state: RunState
    priority: int
    region: str | None
    ready_at: datetime
    created_at: datetime
    finished_at: datetime | None = None
    error: str = ""
    detail: Mapping[str, object] = field(default_factory=dict)


INSERT_RUNS = text("""
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:task_ids AS uuid[]), CAST(:due_ats AS timestamptz[]),
            CAST(:attempts AS integer[]), CAST(:states AS text[]), CAST(:priorities AS integer[]),
            CAST(:regions AS text[]), CAST(:ready_ats AS timestamptz[]),
            CAST(:created_ats AS timestamptz[]), CAST(:finished_ats AS timestamptz[]),
            CAST(:errors AS text[]), CAST(:details AS text[])
        ) AS i(task_id, due_at, attempt, state, priority, region, ready_at, created_at,
               finished_at, error, detail)
    ),
    created AS (
        INSERT INTO runs (task_id, due_at, attempt, state, priority, region, ready_at,
                          created_at, finished_at, error)
        SELECT task_id, due_at, attempt, state, priority, region, ready_at, created_at,
               finished_at, error
        FROM input
        ON CONFLICT (task_id, due_at, attempt) DO NOTHING
        RETURNING *
    ),
    logged AS (
        INSERT INTO run_events
            (at, run_id, task_id, attempt, from_state, to_state, epoch, region, detail)
        SELECT c.created_at, c.id, c.task_id, c.attempt, NULL, c.state, c.epoch, c.region,
               CAST(i.detail AS jsonb)
        FROM created AS c JOIN input AS i USING (task_id, due_at, attempt)
    )
    SELECT * FROM created ORDER BY due_at, attempt
""")


def _insert_params(new_runs: Sequence[NewRun]) -> dict[str, list[Any]]:
    """The column arrays of one ``INSERT_RUNS``."""
    return {
        "task_ids": [run.task_id for run in new_runs],
        "due_ats": [run.due_at for run in new_runs],
        "attempts": [run.attempt for run in new_runs],
        "states": [str(run.state) for run in new_runs],
        "priorities": [run.priority for run in new_runs],
        "regions": [run.region for run in new_runs],
        "ready_ats": [run.ready_at for run in new_runs],
        "created_ats": [run.created_at for run in new_runs],
        "finished_ats": [run.finished_at for run in new_runs],
        "errors": [run.error for run in new_runs],
        "details": [as_json(run.detail) for run in new_runs],
    }


async def insert_runs(connection: AsyncConnection, new_runs: Sequence[NewRun]) -> list[Run]:
    """Create attempts, skipping any whose unique key exists; returns those created."""
    unique = list({(run.task_id, run.due_at, run.attempt): run for run in new_runs}.values())
    if not unique:
        return []
    result = await connection.execute(INSERT_RUNS, _insert_params(unique))
    return [run_from_row(row) for row in result.mappings()]
