"""Submitting tasks and creating the runs of their fire times."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID, uuid4

from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.ledger import pausing, reads
from taskmesh.common.ledger.changes import notify_ready
from taskmesh.common.ledger.creation import NewRun, insert_runs
from taskmesh.common.ledger.dependencies import Readiness, readiness
from taskmesh.common.ledger.rows import SCHEDULE_COLUMNS, as_uuid, task_from_row, task_values
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
    ready = await readiness(connection, spec.dependencies)
    task_id = await _insert_task(connection, spec, now, workflow_id)
    if task_id is None:  # only an idempotency key can conflict
        return await _existing(connection, str(spec.idempotency_key))
    task = await reads.get_task(connection, task_id)
    due_at = first_due_at(spec, now)
    if due_at is None:
        return task, None, True
    (run,) = await insert_runs(connection, new_runs(task, [due_at], ready, now))
    await notify_ready(connection, ready_times([run]), now)
    return task, run, True


def is_plain(spec: TaskSpec) -> bool:
    """True for a task that needs no per-task lookup: no dependencies, no idempotency key."""
    return not spec.dependencies and spec.idempotency_key is None


async def submit_plain_tasks(
    connection: AsyncConnection, specs: Sequence[TaskSpec], now: datetime, workflow_id: UUID
) -> list[tuple[Task, Run | None]]:
    """Store plain tasks (see ``is_plain``) and their first runs: two statements for any number.

    Such a task is always new and always ready, so nothing needs reading first; this is the
    path a batch of independent tasks takes instead of one ``submit_task`` each.
    """
    if not specs:
        return []
    # Ids are chosen here so that the rows can be matched to the specs whatever order
    # RETURNING gives; asking SQLAlchemy to keep the order would insert one row at a time.
    ids = [uuid4() for _ in specs]
    common = {**dict.fromkeys(SCHEDULE_COLUMNS), "created_at": now, "workflow_id": workflow_id}
    values = [
        {**common, **task_values(spec), "id": id_} for id_, spec in zip(ids, specs, strict=True)
    ]
    rows = (await connection.execute(insert(tasks).returning(*tasks.c), values)).mappings()
    by_id = {as_uuid(row["id"]): task_from_row({**row, "dependencies": ()}) for row in rows}
    stored = [by_id[id_] for id_ in ids]
    due = [(task, first_due_at(task.spec, now)) for task in stored]
    fresh = [
        run
        for task, at in due
        if at is not None
        for run in new_runs(task, [at], Readiness.READY, now)
    ]
    runs = {run.task_id: run for run in await insert_runs(connection, fresh)}
    await notify_ready(connection, ready_times(runs.values()), now)
    return [(task, runs.get(task.id)) for task in stored]


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
    await notify_ready(connection, ready_times(created), now)
    return created


def ready_times(runs: Iterable[Run]) -> list[datetime]:
    """When each pending run among ``runs`` may be claimed (the others never will by time)."""
    return [run.ready_at or run.due_at for run in runs if run.state is RunState.PENDING]


async def create_workflow(connection: AsyncConnection, name: str, now: datetime) -> UUID:
    """Create a workflow to group tasks submitted together; returns its id."""
    query = insert(workflows).values(name=name, created_at=now).returning(workflows.c.id)
    return as_uuid((await connection.execute(query)).scalar_one())


async def workflow_exists(connection: AsyncConnection, workflow_id: UUID) -> bool:
    """True when a workflow with this id exists."""
    query = select(workflows.c.id).where(workflows.c.id == workflow_id)
    return (await connection.execute(query)).first() is not None
