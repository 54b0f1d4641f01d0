"""Locking attempts and writing their state changes: the one guarded UPDATE of the ledger.

Every state change of an existing attempt goes through ``write_changes``: the rows are locked
first (``lock_*``, in id order so concurrent writers cannot deadlock each other), the new
values are computed in Python, and one UPDATE per batch writes them, guarded by the legal
sources of the target state (``model.LEGAL_SOURCES``) and the epoch that was read. The same
statement appends the event log. A change may pass through intermediate states on its way
(``steps``: a no-op run's ``running`` then ``succeeded``, reported together): the row is written
once, in its final state, and every hop still gets its own event, in order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.ledger.rows import Row, as_json, as_uuid, retry_from_row, run_from_row
from taskmesh.common.ledger.schema import sql_list
from taskmesh.common.model import LEGAL_SOURCES, Placement, RetryPolicy, Run, RunState

NOTIFY_CHANNEL = "taskmesh_runs_due"

NON_TERMINAL_STATES = frozenset(state for state in RunState if not state.is_terminal)


def _legal_sources_sql() -> str:
    """``model.LEGAL_SOURCES`` as a VALUES list of (target, sources[])."""
    rows = (
        f"('{target}', ARRAY[{sql_list(sources)}]::text[])"
        for target, sources in sorted(LEGAL_SOURCES.items())
    )
    return "VALUES " + ", ".join(rows)


@dataclass(frozen=True, slots=True)
class Locked:
    """An attempt locked for update, with the fields of its task that transitions need."""

    run: Run
    task_region: str | None
    placement: Placement
    retry: RetryPolicy


Step = tuple[Run, datetime]  # an intermediate state of a change, and when it was reached


@dataclass(frozen=True, slots=True)
class Change:
    """One planned write: ``before`` as read under lock, ``after`` as it will be written.

    ``steps`` are the states the attempt passes through between the two, in order; each is
    logged as an event of its own but only ``after`` is written to the row.
    """

    locked: Locked
    after: Run
    at: datetime
    detail: Mapping[str, object] = field(default_factory=dict)
    steps: tuple[Step, ...] = ()

    @property
    def before(self) -> Run:
        """The attempt as it was read."""
        return self.locked.run

    @property
    def first_target(self) -> RunState:
        """The state of the first hop: the one the row's current state must be a source of."""
        return self.steps[0][0].state if self.steps else self.after.state

    @property
    def last_source(self) -> RunState:
        """The state the final hop (to ``after``) leaves."""
        return self.steps[-1][0].state if self.steps else self.before.state


LOCKED_COLUMNS = """
    r.*, t.region AS task_region, t.placement, t.retry_max_attempts, t.retry_initial_backoff,
    t.retry_max_backoff, t.retry_multiplier, t.retry_on
"""

LOCK_BY_ID = text(f"""
    SELECT {LOCKED_COLUMNS}
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.id = ANY(CAST(:run_ids AS uuid[]))
    ORDER BY r.id
    FOR UPDATE OF r
""")

LOCK_BY_TASK = text(f"""
    SELECT {LOCKED_COLUMNS}
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.task_id = :task_id AND r.state = ANY(CAST(:states AS text[]))
    ORDER BY r.id
    FOR UPDATE OF r
""")

LOCK_EARLIER_FIRES = text(f"""
    SELECT {LOCKED_COLUMNS}
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.task_id = :task_id AND r.state = ANY(CAST(:states AS text[]))
      AND r.due_at < CAST(:before AS timestamptz)
    ORDER BY r.id
    FOR UPDATE OF r
""")

LOCK_BY_REGION = text(f"""
    SELECT {LOCKED_COLUMNS}
    FROM runs AS r JOIN tasks AS t ON t.id = r.task_id
    WHERE r.region = :region AND r.state = ANY(CAST(:states AS text[]))
    ORDER BY r.id
    FOR UPDATE OF r
""")

WRITE = text(f"""
    WITH legal(target, sources) AS ({_legal_sources_sql()}),
    input AS (
        SELECT * FROM unnest(
            CAST(:run_ids AS uuid[]), CAST(:from_states AS text[]),
            CAST(:from_epochs AS bigint[]), CAST(:first_targets AS text[]),
            CAST(:last_sources AS text[]), CAST(:final_ordinals AS integer[]),
            CAST(:states AS text[]), CAST(:epochs AS bigint[]),
            CAST(:regions AS text[]), CAST(:worker_ids AS text[]),
            CAST(:assigned_ats AS timestamptz[]), CAST(:started_ats AS timestamptz[]),
            CAST(:finished_ats AS timestamptz[]), CAST(:exit_codes AS integer[]),
            CAST(:output_tails AS text[]), CAST(:errors AS text[]), CAST(:ats AS timestamptz[]),
            CAST(:details AS text[])
        ) AS i(run_id, from_state, from_epoch, first_target, last_source, final_ordinal, state,
               epoch, region, worker_id, assigned_at, started_at, finished_at, exit_code,
               output_tail, error, at, detail)
    ),
    steps AS (
        SELECT * FROM unnest(
            CAST(:step_run_ids AS uuid[]), CAST(:step_ordinals AS integer[]),
            CAST(:step_from_states AS text[]), CAST(:step_states AS text[]),
            CAST(:step_epochs AS bigint[]), CAST(:step_regions AS text[]),
            CAST(:step_worker_ids AS text[]), CAST(:step_ats AS timestamptz[])
        ) AS s(run_id, ordinal, from_state, state, epoch, region, worker_id, at)
    ),
    moved AS (
        UPDATE runs AS r SET
            state = i.state, epoch = i.epoch, region = i.region, worker_id = i.worker_id,
            assigned_at = i.assigned_at, started_at = i.started_at,
            finished_at = i.finished_at, exit_code = i.exit_code,
            output_tail = i.output_tail, error = i.error
        FROM input AS i JOIN legal AS l ON l.target = i.first_target
        WHERE r.id = i.run_id AND r.state = i.from_state AND r.epoch = i.from_epoch
          AND r.state = ANY(l.sources)
        RETURNING r.id, r.task_id, r.attempt, r.state, r.epoch, r.region, r.worker_id,
                  i.last_source, i.final_ordinal, i.at AS event_at, i.detail AS event_detail
    ),
    logged AS (
        INSERT INTO run_events
            (at, run_id, task_id, attempt, from_state, to_state, epoch, region, worker_id, detail)
        SELECT at, run_id, task_id, attempt, from_state, to_state, epoch, region, worker_id,
               detail
        FROM (
            SELECT s.at, m.id AS run_id, m.task_id, m.attempt, s.from_state,
                   s.state AS to_state, s.epoch, s.region, s.worker_id,
                   CAST(m.event_detail AS jsonb) AS detail, s.ordinal
            FROM moved AS m JOIN steps AS s ON s.run_id = m.id
            UNION ALL
            SELECT event_at, id, task_id, attempt, last_source, state, epoch, region, worker_id,
                   CAST(event_detail AS jsonb), final_ordinal
            FROM moved
        ) AS e
        ORDER BY run_id, ordinal  -- ids, hence the log's order, follow each attempt's hops
    )
    SELECT id FROM moved
""")

# The payload is empty for runs claimable now, else the earliest ready time (ISO 8601) of
# runs that become claimable later: a dispatcher sets its timer to it instead of polling.
NOTIFY = text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', CAST(:payload AS text))")


def locked_from_row(row: Row) -> Locked:
    """A ``Locked`` attempt from a row of one of the ``LOCK_*`` queries."""
    return Locked(
        run=run_from_row(row),
        task_region=row["task_region"],
        placement=Placement(row["placement"]),
        retry=retry_from_row(row),
    )


async def lock(connection: AsyncConnection, query: TextClause, **params: Any) -> dict[UUID, Locked]:
    """Lock the attempts a ``LOCK_*`` query selects, by id."""
    result = await connection.execute(query, params)
    locked = (locked_from_row(row) for row in result.mappings())
    return {item.run.id: item for item in locked}


async def lock_ids(connection: AsyncConnection, run_ids: Sequence[UUID]) -> dict[UUID, Locked]:
    """Lock the attempts with these ids (unknown ids are simply absent)."""
    return await lock(connection, LOCK_BY_ID, run_ids=sorted(set(run_ids)))


def _write_params(changes: Sequence[Change]) -> dict[str, list[Any]]:
    """The column arrays of one ``WRITE``: the rows, then the intermediate hops."""
    after = [change.after for change in changes]
    return {
        "run_ids": [run.id for run in after],
        "from_states": [str(change.before.state) for change in changes],
        "from_epochs": [change.before.epoch for change in changes],
        "first_targets": [str(change.first_target) for change in changes],
        "last_sources": [str(change.last_source) for change in changes],
        "final_ordinals": [len(change.steps) for change in changes],
        "states": [str(run.state) for run in after],
        "epochs": [run.epoch for run in after],
        "regions": [run.region for run in after],
        "worker_ids": [run.worker_id for run in after],
        "assigned_ats": [run.assigned_at for run in after],
        "started_ats": [run.started_at for run in after],
        "finished_ats": [run.finished_at for run in after],
        "exit_codes": [run.exit_code for run in after],
        "output_tails": [run.output_tail for run in after],
        "errors": [run.error for run in after],
        "ats": [change.at for change in changes],
        "details": [as_json(change.detail) for change in changes],
        **_step_params(changes),
    }


def _step_params(changes: Sequence[Change]) -> dict[str, list[Any]]:
    """The column arrays of the intermediate hops of ``changes`` (empty for most writes)."""
    # Hop k leaves the state before it (the row's, then each step's); the last source is the
    # final hop's, logged with the row itself, so ``zip`` stops one short of it.
    hops = [
        (change.after.id, ordinal, source, run, at)
        for change in changes
        for ordinal, (source, (run, at)) in enumerate(
            zip(
                [change.before.state, *(run.state for run, _ in change.steps)],
                change.steps,
                strict=False,
            )
        )
    ]
    return {
        "step_run_ids": [run_id for run_id, *_ in hops],
        "step_ordinals": [ordinal for _, ordinal, *_ in hops],
        "step_from_states": [str(source) for _, _, source, _, _ in hops],
        "step_states": [str(run.state) for *_, run, _ in hops],
        "step_epochs": [run.epoch for *_, run, _ in hops],
        "step_regions": [run.region for *_, run, _ in hops],
        "step_worker_ids": [run.worker_id for *_, run, _ in hops],
        "step_ats": [at for *_, at in hops],
    }


async def write_changes(connection: AsyncConnection, changes: Sequence[Change]) -> list[Run]:
    """Write changes of distinct attempts in one guarded statement; returns what was written.

    The attempts must have been locked by this transaction, so the guard can only fail on a
    planning bug; such a change is simply absent from the result. The rows are not read back:
    a written row is exactly the change's ``after`` (the rest of it was read under the lock).
    """
    if not changes:
        return []
    result = await connection.execute(WRITE, _write_params(changes))
    written = {as_uuid(run_id) for run_id in result.scalars()}
    return [change.after for change in changes if change.after.id in written]


async def notify_due(connection: AsyncConnection, ready_at: datetime | None = None) -> None:
    """Tell dispatchers that runs are claimable at ``ready_at`` (None: now), on commit."""
    payload = "" if ready_at is None else ready_at.isoformat()
    await connection.execute(NOTIFY, {"payload": payload})


async def notify_pending(connection: AsyncConnection, runs: Iterable[Run], now: datetime) -> None:
    """NOTIFY dispatchers of the earliest instant a pending one of ``runs`` becomes claimable.

    Nothing when none is pending: the others never become claimable by time.
    """
    ready = (run.ready_at or run.due_at for run in runs if run.state is RunState.PENDING)
    earliest = min(ready, default=None)
    if earliest is not None:
        await notify_due(connection, None if earliest <= now else earliest)
