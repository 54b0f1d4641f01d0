"""Submitting tasks and creating the runs of their fire times."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.ledger import pausing, reads
from taskmesh.common.ledger.changes import notify_pending
from taskmesh.common.ledger.creation import NewRun, insert_runs
from taskmesh.common.ledger.dependencies import Readiness, readiness
from taskmesh.common.ledger.rows import (
    SCHEDULE_COLUMNS,
    as_json,
    as_uuid,
    run_from_row,
    task_values,
)
from taskmesh.common.ledger.schema import task_dependencies, tasks, workflows
from taskmesh.common.model import AtSchedule, Run, RunState, Task, TaskSpec

FIRST_STATE = {
    Readiness.READY: RunState.PENDING,
    Readiness.WAITING: RunState.BLOCKED,
    Readiness.DOOMED: RunState.UPSTREAM_FAILED,
}
DOOMED_ERROR = "a dependency ended without success before this task was submitted"


def first_due_at(spec: TaskSpec, now: datetime) -> datetime | None:
    """When the first run is due: at once, at the ``at`` time, or None for recurring tasks."""
    if spec.schedule is None:
        return now
    if isinstance(spec.schedule, AtSchedule):
        return spec.schedule.at
    return None  # cron and interval runs are materialised by the master


def _check_dependencies(spec: TaskSpec) -> None:
    """Refuse a dependency listed twice (the ledger keys edges by pair)."""
    seen: set[UUID] = set()
    for task_id in spec.dependencies:
        if task_id in seen:
            raise ValidationError("dependencies", f"task {task_id} is listed twice")
        seen.add(task_id)


def new_runs(
    task: Task, due_times: Sequence[datetime], ready: Readiness, now: datetime
) -> list[NewRun]:
    """First attempts of ``task`` at ``due_times``, in the state its dependencies allow."""
    state = FIRST_STATE[ready]
    doomed = state is RunState.UPSTREAM_FAILED
    return [
        NewRun(
            task_id=task.id,
            due_at=due_at,
            attempt=1,
            state=state,
            priority=task.spec.priority,
            region=task.spec.region,
            ready_at=due_at,
            created_at=now,
            finished_at=now if doomed else None,
            error=DOOMED_ERROR if doomed else "",
        )
        for due_at in due_times
    ]


async def _insert_task(
    connection: AsyncConnection, spec: TaskSpec, now: datetime, workflow_id: UUID | None
) -> UUID | None:
    """Insert the task row; None when its idempotency key is taken (after waiting for it)."""
    values = {**task_values(spec), "created_at": now, "workflow_id": workflow_id}
    query = (
        pg_insert(tasks)
        .values(values)
        .on_conflict_do_nothing(index_elements=[tasks.c.idempotency_key])
        .returning(tasks.c.id)
    )
    task_id = (await connection.execute(query)).scalar_one_or_none()
    if task_id is None:
        return None
    if spec.dependencies:
        edges = [
            {"task_id": task_id, "depends_on": dependency, "position": position}
            for position, dependency in enumerate(spec.dependencies)
        ]
        await connection.execute(insert(task_dependencies), edges)
    return as_uuid(task_id)


async def _existing(connection: AsyncConnection, key: str) -> tuple[Task, Run | None, bool]:
    """The answer to a repeated submit: the first task and its latest attempt."""
    task = await reads.task_by_idempotency_key(connection, key)
    if task is None:  # the conflicting insert rolled back: cannot happen after ON CONFLICT
        raise RuntimeError(f"idempotency key {key!r} conflicted but no task holds it")
    return task, await reads.latest_run(connection, task.id), False


async def submit_task(
    connection: AsyncConnection, spec: TaskSpec, now: datetime, workflow_id: UUID | None
) -> tuple[Task, Run | None, bool]:
    """Store a task and its first run; a known idempotency key returns the first task."""
    _check_dependencies(spec)
    if workflow_id is not None and not await workflow_exists(connection, workflow_id):
        raise NotFoundError(f"workflow {workflow_id} not found")
    if is_plain(spec):  # nothing to read first: the one-statement path
        ((task, run),) = await submit_plain_tasks(connection, [spec], now, workflow_id)
        return task, run, True
    ready = await readiness(connection, spec.dependencies)
    task_id = await _insert_task(connection, spec, now, workflow_id)
    if task_id is None:  # only an idempotency key can conflict
        return await _existing(connection, str(spec.idempotency_key))
    task = await reads.get_task(connection, task_id)
    due_at = first_due_at(spec, now)
    if due_at is None:
        return task, None, True
    (run,) = await insert_runs(connection, new_runs(task, [due_at], ready, now))
    await notify_pending(connection, [run], now)
    return task, run, True


def is_plain(spec: TaskSpec) -> bool:
    """True for a task that needs no per-task lookup: no dependencies, no idempotency key."""
    return not spec.dependencies and spec.idempotency_key is None


# Array columns travel as JSON text (``unnest`` would flatten a two-dimensional array).
INSERT_PLAIN_TASKS = text("""
    WITH input AS (
        SELECT * FROM unnest(
            CAST(:ids AS uuid[]), CAST(:names AS text[]), CAST(:descriptions AS text[]),
            CAST(:commands AS text[]), CAST(:executors AS text[]), CAST(:args AS text[]),
            CAST(:schedule_kinds AS text[]), CAST(:schedule_ats AS timestamptz[]),
            CAST(:cron_expressions AS text[]), CAST(:cron_timezones AS text[]),
            CAST(:interval_everys AS interval[]), CAST(:interval_start_ats AS timestamptz[]),
            CAST(:misfires AS text[]), CAST(:overlaps AS text[]), CAST(:priorities AS integer[]),
            CAST(:regions AS text[]), CAST(:placements AS text[]), CAST(:kinds AS text[]),
            CAST(:timeouts AS interval[]), CAST(:schedule_to_start_timeouts AS interval[]),
            CAST(:retry_max_attempts AS integer[]), CAST(:retry_initial_backoffs AS interval[]),
            CAST(:retry_max_backoffs AS interval[]),
            CAST(:retry_multipliers AS double precision[]), CAST(:retry_ons AS text[]),
            CAST(:labels AS text[]), CAST(:due_ats AS timestamptz[])
        ) AS i(id, name, description, command, executor, args, schedule_kind, schedule_at,
               cron_expression, cron_timezone, interval_every, interval_start_at, misfire,
               overlap, priority, region, placement, kind, timeout, schedule_to_start_timeout,
               retry_max_attempts, retry_initial_backoff, retry_max_backoff, retry_multiplier,
               retry_on, labels, due_at)
    ),
    stored AS (
        INSERT INTO tasks (id, name, description, command, executor, args, schedule_kind,
                           schedule_at, cron_expression, cron_timezone, interval_every,
                           interval_start_at, misfire, overlap, priority, region, placement,
                           kind, timeout, schedule_to_start_timeout, retry_max_attempts,
                           retry_initial_backoff, retry_max_backoff, retry_multiplier, retry_on,
                           labels, workflow_id, created_at)
        SELECT id, name, description, command, executor,
               ARRAY(SELECT jsonb_array_elements_text(CAST(args AS jsonb))), schedule_kind,
               schedule_at, cron_expression, cron_timezone, interval_every, interval_start_at,
               misfire, overlap, priority, region, placement, kind, timeout,
               schedule_to_start_timeout, retry_max_attempts, retry_initial_backoff,
               retry_max_backoff, retry_multiplier,
               ARRAY(SELECT jsonb_array_elements_text(CAST(retry_on AS jsonb))),
               CAST(labels AS jsonb), CAST(:workflow_id AS uuid), CAST(:now AS timestamptz)
        FROM input
        RETURNING id, priority, region
    ),
    created AS (  -- from the stored rows: a task the ledger refuses fails first, by its name
        INSERT INTO runs (task_id, due_at, attempt, state, priority, region, ready_at,
                          created_at)
        SELECT s.id, i.due_at, 1, 'pending', s.priority, s.region, i.due_at,
               CAST(:now AS timestamptz)
        FROM stored AS s JOIN input AS i USING (id) WHERE i.due_at IS NOT NULL
        RETURNING *
    ),
    logged AS (
        INSERT INTO run_events (at, run_id, task_id, attempt, from_state, to_state, epoch, region)
        SELECT created_at, id, task_id, attempt, NULL, state, epoch, region FROM created
    )
    SELECT * FROM created
""")


def _plain_params(
    specs: Sequence[TaskSpec], ids: Sequence[UUID], now: datetime, workflow_id: UUID | None
) -> dict[str, Any]:
    """The parameters of one ``INSERT_PLAIN_TASKS``: mostly column arrays."""
    rows = [
        {**dict.fromkeys(SCHEDULE_COLUMNS), **task_values(spec), "due_at": first_due_at(spec, now)}
        for spec in specs
    ]

    def column(name: str) -> list[Any]:
        return [row[name] for row in rows]

    return {
        "now": now,
        "workflow_id": workflow_id,
        "ids": list(ids),
        **{f"{name}s": column(name) for name in PLAIN_COLUMNS},
        "args": [json.dumps(row["args"]) for row in rows],
        "retry_max_attempts": column("retry_max_attempts"),
        "retry_ons": [json.dumps(row["retry_on"]) for row in rows],
        "labels": [as_json(row["labels"]) for row in rows],
        "priorities": column("priority"),
    }


# Scalar columns passed under their plural name (``name`` → ``:names``).
PLAIN_COLUMNS = (
    *SCHEDULE_COLUMNS,
    "name",
    "description",
    "command",
    "executor",
    "region",
    "placement",
    "kind",
    "timeout",
    "schedule_to_start_timeout",
    "retry_initial_backoff",
    "retry_max_backoff",
    "retry_multiplier",
    "due_at",
)


async def submit_plain_tasks(
    connection: AsyncConnection,
    specs: Sequence[TaskSpec],
    now: datetime,
    workflow_id: UUID | None,
) -> list[tuple[Task, Run | None]]:
    """Store plain tasks (see ``is_plain``), their first runs and events: one statement.

    Such a task is always new and always ready, so nothing needs reading first; this is the
    path a batch of independent tasks takes instead of one ``submit_task`` each. Nothing of
    the tasks is read back: a stored task is its spec, its id (chosen here) and ``now``.
    """
    if not specs:
        return []
    ids = [uuid4() for _ in specs]
    result = await connection.execute(
        INSERT_PLAIN_TASKS, _plain_params(specs, ids, now, workflow_id)
    )
    runs = {run.task_id: run for run in (run_from_row(row) for row in result.mappings())}
    await notify_pending(connection, runs.values(), now)
    return [
        (Task(id_, spec, now, workflow_id), runs.get(id_))
        for id_, spec in zip(ids, specs, strict=True)
    ]


async def materialise_runs(
    connection: AsyncConnection, task_id: UUID, due_times: Sequence[datetime], now: datetime
) -> list[Run]:
    """Create the first attempts of these fire times; fire times that exist are skipped.

    Nothing is created for a paused task: the flag is read under a share lock, so a pause or
    a cancel committed before this transaction is seen, and one after it waits for it.
    """
    if await pausing.lock_task(connection, task_id, share=True):
        return []
    task = await reads.get_task(connection, task_id)
    ready = await readiness(connection, task.spec.dependencies)
    created = await insert_runs(connection, new_runs(task, due_times, ready, now))
    await notify_pending(connection, created, now)
    return created


async def create_workflow(connection: AsyncConnection, name: str, now: datetime) -> UUID:
    """Create a workflow to group tasks submitted together; returns its id."""
    query = insert(workflows).values(name=name, created_at=now).returning(workflows.c.id)
    return as_uuid((await connection.execute(query)).scalar_one())


async def workflow_exists(connection: AsyncConnection, workflow_id: UUID) -> bool:
    """True when a workflow with this id exists."""
    query = select(workflows.c.id).where(workflows.c.id == workflow_id)
    return (await connection.execute(query)).first() is not None
