"""Read-only queries: tasks, runs, the event log, regions, workers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import ColumnElement, Select, Text, cast, func, or_, select, text, tuple_
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import NotFoundError
from taskmesh.common.ledger.rows import (
    event_from_row,
    region_from_row,
    run_from_row,
    task_from_row,
    worker_from_row,
)
from taskmesh.common.ledger.schema import (
    regions,
    run_events,
    runs,
    task_dependencies,
    tasks,
    workers,
)
from taskmesh.common.model import (
    EventCursor,
    EventFilter,
    EventPage,
    Region,
    Run,
    RunEvent,
    RunState,
    Task,
    TaskFilter,
    TaskStatus,
    Worker,
)


def task_select() -> Select[Any]:
    """Every column of ``tasks`` plus its ordered ``dependencies`` array."""
    dependencies = (
        select(
            func.array_agg(
                aggregate_order_by(task_dependencies.c.depends_on, task_dependencies.c.position)
            )
        )
        .where(task_dependencies.c.task_id == tasks.c.id)
        .scalar_subquery()
    )
    return select(tasks, func.coalesce(dependencies, text("'{}'::uuid[]")).label("dependencies"))


async def get_task(connection: AsyncConnection, task_id: UUID) -> Task:
    """The task with this id; ``NotFoundError`` if there is none."""
    row = (await connection.execute(task_select().where(tasks.c.id == task_id))).mappings().first()
    if row is None:
        raise NotFoundError(f"task {task_id} not found")
    return task_from_row(row)


async def task_by_idempotency_key(connection: AsyncConnection, key: str) -> Task | None:
    """The task submitted with this idempotency key, if any."""
    query = task_select().where(tasks.c.idempotency_key == key)
    row = (await connection.execute(query)).mappings().first()
    return None if row is None else task_from_row(row)


RUN_PREFIX = "latest_"


def _latest_runs() -> Any:
    """The latest attempt of each ``tasks`` row, as a LATERAL subquery."""
    return (
        select(runs)
        .where(runs.c.task_id == tasks.c.id)
        .order_by(runs.c.due_at.desc(), runs.c.attempt.desc())
        .limit(1)
        .lateral("latest")
    )


def _cursor(task_id: UUID, newer: bool) -> ColumnElement[bool]:
    """Tasks newer than the cursor task, or older than it."""
    cursor = tasks.alias("cursor")
    anchor = select(cursor.c.created_at, cursor.c.id).where(cursor.c.id == task_id)
    key = tuple_(tasks.c.created_at, tasks.c.id)
    return key > anchor.scalar_subquery() if newer else key < anchor.scalar_subquery()


def with_latest_run(query: Select[Any]) -> tuple[Select[Any], Any]:
    """``query`` over ``tasks`` plus the latest attempt's columns (prefixed ``latest_``).

    Returns the query and the LATERAL subquery, for filters on the latest attempt.
    """
    latest = _latest_runs()
    latest_columns = [column.label(RUN_PREFIX + column.name) for column in latest.c]
    return query.add_columns(*latest_columns).outerjoin(latest, text("true")), latest


def _filtered(query: Select[Any], latest: Any, filters: TaskFilter) -> Select[Any]:
    """``query`` narrowed to the tasks ``filters`` match."""
    if filters.state is not None:
        query = query.where(latest.c.state == str(filters.state))
    if filters.region is not None:
        query = query.where(
            or_(tasks.c.region == filters.region, latest.c.region == filters.region)
        )
    if filters.kind is not None:
        query = query.where(tasks.c.kind == filters.kind)
    if filters.search:
        query = query.where(
            or_(
                tasks.c.name.icontains(filters.search, autoescape=True),
                cast(tasks.c.id, Text).startswith(filters.search.lower(), autoescape=True),
            )
        )
    if filters.created_since is not None:
        query = query.where(tasks.c.created_at >= filters.created_since)
    return query


def _list_query(filters: TaskFilter, before: UUID | None, after: UUID | None) -> Select[Any]:
    """The filtered, keyset-ordered query behind ``list_tasks``."""
    query, latest = with_latest_run(task_select())
    query = _filtered(query, latest, filters)
    if after is not None:
        query = query.where(_cursor(after, newer=False))
    if before is not None:
        query = query.where(_cursor(before, newer=True))
        return query.order_by(tasks.c.created_at, tasks.c.id)
    return query.order_by(tasks.c.created_at.desc(), tasks.c.id.desc())


def status_from_row(row: Any) -> TaskStatus:
    """A ``TaskStatus`` from a ``list_tasks`` row."""
    if row[RUN_PREFIX + "id"] is None:
        return TaskStatus(task_from_row(row))
    run_row = {
        key[len(RUN_PREFIX) :]: value for key, value in row.items() if key.startswith(RUN_PREFIX)
    }
    return TaskStatus(task_from_row(row), run_from_row(run_row))


async def list_tasks(
    connection: AsyncConnection,
    *,
    filters: TaskFilter,
    limit: int,
    before: UUID | None,
    after: UUID | None,
) -> list[TaskStatus]:
    """Tasks newest first with their latest attempt, filtered, one keyset page at a time.

    ``after``: the page following that task (older ones); ``before``: the page preceding it.
    """
    query = _list_query(filters, before, after).limit(limit)
    statuses = [status_from_row(row) for row in (await connection.execute(query)).mappings()]
    return statuses[::-1] if before is not None else statuses


async def get_run(connection: AsyncConnection, run_id: UUID) -> Run:
    """The attempt with this id; ``NotFoundError`` if there is none."""
    row = (await connection.execute(select(runs).where(runs.c.id == run_id))).mappings().first()
    if row is None:
        raise NotFoundError(f"run {run_id} not found")
    return run_from_row(row)


async def list_runs(connection: AsyncConnection, task_id: UUID, limit: int) -> list[Run]:
    """A task's attempts, oldest fire time first, attempts in order (at most ``limit``)."""
    query = (
        select(runs)
        .where(runs.c.task_id == task_id)
        .order_by(runs.c.due_at, runs.c.attempt)
        .limit(limit)
    )
    return [run_from_row(row) for row in (await connection.execute(query)).mappings()]


async def latest_run(connection: AsyncConnection, task_id: UUID) -> Run | None:
    """A task's latest attempt: the last attempt of its latest fire time."""
    query = (
        select(runs)
        .where(runs.c.task_id == task_id)
        .order_by(runs.c.due_at.desc(), runs.c.attempt.desc())
        .limit(1)
    )
    row = (await connection.execute(query)).mappings().first()
    return None if row is None else run_from_row(row)


def _event_conditions(filters: EventFilter) -> list[ColumnElement[bool]]:
    """WHERE terms for an ``EventFilter``."""
    conditions: list[ColumnElement[bool]] = []
    if filters.task_id is not None:
        conditions.append(run_events.c.task_id == filters.task_id)
    if filters.run_id is not None:
        conditions.append(run_events.c.run_id == filters.run_id)
    if filters.region is not None:
        conditions.append(run_events.c.region == filters.region)
    if filters.states:
        conditions.append(run_events.c.to_state.in_(sorted(str(s) for s in filters.states)))
    if filters.workflow_id is not None:
        members = select(tasks.c.id).where(tasks.c.workflow_id == filters.workflow_id)
        conditions.append(run_events.c.task_id.in_(members.scalar_subquery()))
    return conditions


async def events_after(
    connection: AsyncConnection, event_id: int, limit: int, filters: EventFilter
) -> list[RunEvent]:
    """Events with an id above ``event_id``, oldest first, at most ``limit``."""
    query = (
        select(run_events)
        .where(run_events.c.id > event_id, *_event_conditions(filters))
        .order_by(run_events.c.id)
        .limit(limit)
    )
    return [event_from_row(row) for row in (await connection.execute(query)).mappings()]


async def task_events(connection: AsyncConnection, task_id: UUID, limit: int) -> list[RunEvent]:
    """A task's newest ``limit`` events (every attempt's transitions), oldest first."""
    query = (
        select(run_events)
        .where(run_events.c.task_id == task_id)
        .order_by(run_events.c.id.desc())
        .limit(limit)
    )
    rows = (await connection.execute(query)).mappings().all()
    return [event_from_row(row) for row in reversed(rows)]


# Transactions older than every one still running: their events can no longer change.
FINISHED_HORIZON = text("SELECT (pg_snapshot_xmin(pg_current_snapshot()))::text::bigint")


async def follow_events(
    connection: AsyncConnection, cursor: EventCursor, limit: int, filters: EventFilter
) -> EventPage:
    """Events after ``cursor`` whose transactions have finished, in (txid, id) order.

    Ids are allocated at insert, not at commit, so "id above the last one sent" can skip an
    event whose transaction commits late. Every transaction below the horizon has finished, so
    the events below it form a set that never grows: reading it in (txid, id) order and moving
    the cursor through it misses nothing and repeats nothing.
    """
    horizon = int((await connection.execute(FINISHED_HORIZON)).scalar_one())
    position = tuple_(run_events.c.txid, run_events.c.id)
    query = (
        select(run_events)
        .where(position > tuple_(cursor.txid, cursor.id), run_events.c.txid < horizon)
        .where(*_event_conditions(filters))
        .order_by(run_events.c.txid, run_events.c.id)
        .limit(limit)
    )
    rows = (await connection.execute(query)).mappings().all()
    events = [event_from_row(row) for row in rows]
    if len(rows) == limit:
        return EventPage(events, EventCursor(rows[-1]["txid"], rows[-1]["id"]))
    # Everything below the horizon has been read: later events all belong to newer transactions.
    return EventPage(events, max(cursor, EventCursor(horizon, 0)))


async def event_cursor(connection: AsyncConnection, after_id: int) -> EventCursor:
    """Where a tail starts: right after event ``after_id``, or at the present when it is 0."""
    if after_id == 0:
        horizon = int((await connection.execute(FINISHED_HORIZON)).scalar_one())
        return EventCursor(horizon, 0)
    query = select(run_events.c.txid).where(run_events.c.id == after_id)
    txid = (await connection.execute(query)).scalar_one_or_none()
    if txid is None:
        raise NotFoundError(f"after_id: no event {after_id} in the log; resume from 0 or a sent id")
    return EventCursor(int(txid), after_id)


async def count_pending(connection: AsyncConnection) -> int:
    """How many attempts wait in ``pending`` (served by the partial claim index)."""
    query = select(func.count()).select_from(runs).where(runs.c.state == str(RunState.PENDING))
    return int((await connection.execute(query)).scalar_one())


async def count_runs(connection: AsyncConnection) -> dict[tuple[RunState, str | None], int]:
    """Exact attempt counts by (state, region); an index-only scan of ``ix_runs_state_region``."""
    query = select(runs.c.state, runs.c.region, func.count()).group_by(runs.c.state, runs.c.region)
    rows = (await connection.execute(query)).all()
    return {(RunState(state), region): int(count) for state, region, count in rows}


async def list_regions(connection: AsyncConnection) -> list[Region]:
    """Every region the ledger has heard from, by name."""
    query = select(regions).order_by(regions.c.name)
    return [region_from_row(row) for row in (await connection.execute(query)).mappings()]


async def list_workers(connection: AsyncConnection, region: str | None) -> list[Worker]:
    """Registered workers, of one region or all, by id."""
    query = select(workers).order_by(workers.c.id)
    if region is not None:
        query = query.where(workers.c.region == region)
    return [worker_from_row(row) for row in (await connection.execute(query)).mappings()]


DELEGATED_CHUNK = 1000  # rows fetched at a time when streaming a region's delegated runs


async def delegated_before(
    connection: AsyncConnection,
    region: str,
    before: datetime,
    keep: Callable[[UUID, int], bool] = lambda _run_id, _epoch: True,
) -> list[tuple[UUID, int]]:
    """(run id, epoch) of the runs delegated to ``region`` before ``before`` and still there,
    those ``keep`` accepts.

    Streamed a chunk at a time and filtered as they come: a region holding 100,000 queued
    runs asks for the few it does not hold, and reading them all at once every audit cost it
    tens of MiB.
    """
    query = select(runs.c.id, runs.c.epoch).where(
        runs.c.region == region,
        runs.c.state == str(RunState.DELEGATED),
        runs.c.delegated_at < before,
    )
    result = await connection.stream(query.execution_options(yield_per=DELEGATED_CHUNK))
    return [(row.id, row.epoch) async for row in result if keep(row.id, row.epoch)]


async def count_runs_by_state(connection: AsyncConnection) -> dict[RunState, int]:
    """How many attempts are in each state, exactly (states with none are absent).

    Every attempt counts, finished history included: the (state, region) counts summed.
    """
    totals: dict[RunState, int] = {}
    for (state, _), count in (await count_runs(connection)).items():
        totals[state] = totals.get(state, 0) + count
    return totals


async def spillover_counts(
    connection: AsyncConnection, since: datetime
) -> dict[tuple[str, str], int]:
    """Attempts delegated since ``since`` to a fallback region: (spilled from, spilled to) → count.

    Served by the partial index over spilled attempts; a re-delegation counts once more.
    """
    query = (
        select(runs.c.spilled_from, runs.c.region, func.count())
        .where(
            runs.c.spilled_from.is_not(None),
            runs.c.delegated_at >= since,
            runs.c.region != runs.c.spilled_from,  # not put back to pending since
        )
        .group_by(runs.c.spilled_from, runs.c.region)
    )
    rows = (await connection.execute(query)).all()
    return {(row[0], row[1]): int(row[2]) for row in rows}
