"""The SQL of ``taskmesh bench --scenario ledger``: a ledger grown to millions of rows of history.

The benchmark measures the master's real claim (``dispatch.claim_due_runs``) on a ledger of its
own, created beside the measured one on the same server and dropped after. History is written
server-side (``INSERT ... SELECT generate_series``) into the real tables: finished runs in a
terminal state, ten per task (the fires of a recurring task), each with the event of its last
transition. History ids are sequential (their order is not what is measured; random ones would
only make filling slower). A fixed set of due runs
is what every claim takes; after each claim it is put back to ``pending`` (not timed), so each
size is measured on the same work.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import Row, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from taskmesh.common.ledger.benchmarks import LABEL
from taskmesh.common.ledger.engine import create_engine, translated_errors

# Regions of the history and of the due runs: ``eu`` and ``us`` have bound due runs, ``ap``
# only gets region-less ones placed there (the floating part of the claim).
REGIONS = ("eu", "us", "ap")
HISTORY_TAG = "ledger-history"
DUE_TAG = "ledger-due"
HISTORY_TABLES = ("tasks", "runs", "run_events")

# Finished runs (95 % succeeded, 4 % failed, 1 % cancelled, spread over 30 days up to an hour
# ago), their tasks (one per ten runs, made by its first run in the batch) and their last events.
FILL_HISTORY = text("""
    WITH spec AS (
        SELECT g, CAST('a' || lpad(to_hex(g / 10), 31, '0') AS uuid) AS task_id,
               CAST('b' || lpad(to_hex(g), 31, '0') AS uuid) AS run_id,
               (CAST(:regions AS text[]))[1 + g / 10 % 3] AS region,
               CAST(:now AS timestamptz) - interval '1 hour'
                   - interval '1 second' * (g % 2592000) AS due_at,
               CASE WHEN g % 100 < 95 THEN 'succeeded'
                    WHEN g % 100 < 99 THEN 'failed' ELSE 'cancelled' END AS state
        FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
    ),
    new_tasks AS (
        INSERT INTO tasks (id, name, command, executor, region, schedule_kind, interval_every,
                           interval_start_at, retry_initial_backoff, retry_max_backoff,
                           retry_multiplier, labels, created_at)
        SELECT task_id, 'history-' || g / 10, 'noop', 'noop', region, 'interval',
               interval '1 second', due_at, interval '1 second', interval '1 minute', 2,
               jsonb_build_object(CAST(:label AS text), CAST(:tag AS text)), due_at
        FROM spec WHERE g % 10 = 0 OR g = CAST(:first AS bigint)
        ON CONFLICT (id) DO NOTHING
    ),
    new_runs AS (
        INSERT INTO runs (id, task_id, attempt, state, epoch, priority, region, worker_id,
                          due_at, ready_at, created_at, delegated_at, assigned_at, started_at,
                          finished_at, exit_code)
        SELECT run_id, task_id, 1, state, 1, 0, region, 'worker-' || region || '-1',
               due_at, due_at, due_at, due_at + interval '10 ms', due_at + interval '20 ms',
               due_at + interval '30 ms', due_at + interval '50 ms',
               CASE state WHEN 'succeeded' THEN 0 WHEN 'failed' THEN 1 END
        FROM spec
    )
    INSERT INTO run_events (at, run_id, task_id, attempt, from_state, to_state, epoch, region,
                            worker_id)
    SELECT due_at + interval '50 ms', run_id, task_id, 1, 'running', state, 1, region,
           'worker-' || region || '-1'
    FROM spec
""")

# The due runs every claim takes: 40 % bound to ``eu``, 40 % to ``us``, 20 % region-less,
# priorities 0-2, due a minute ago (a millisecond apart, so their order is total).
FILL_DUE = text("""
    WITH spec AS (
        SELECT g, gen_random_uuid() AS task_id,
               CASE WHEN g % 5 < 2 THEN 'eu' WHEN g % 5 < 4 THEN 'us' END AS region,
               CAST(g % 3 AS integer) AS priority,
               CAST(:now AS timestamptz) - interval '1 minute'
                   + interval '1 millisecond' * g AS due_at
        FROM generate_series(1, CAST(:count AS integer)) AS g
    ),
    new_tasks AS (
        INSERT INTO tasks (id, name, command, executor, region, priority, schedule_kind,
                           schedule_at, retry_initial_backoff, retry_max_backoff,
                           retry_multiplier, labels, created_at)
        SELECT task_id, 'due-' || g, 'noop', 'noop', region, priority, 'at', due_at,
               interval '1 second', interval '1 minute', 2,
               jsonb_build_object(CAST(:label AS text), CAST(:tag AS text)), due_at
        FROM spec
    )
    INSERT INTO runs (task_id, attempt, state, priority, region, due_at, ready_at, created_at)
    SELECT task_id, 1, 'pending', priority, region, due_at, due_at, due_at FROM spec
""")

# Claimed runs back to pending in the region their task names (NULL: region-less again).
RETURN_CLAIMED = text("""
    UPDATE runs AS r SET state = 'pending', region = t.region, delegated_at = NULL,
                         worker_id = NULL, spilled_from = NULL
    FROM tasks AS t
    WHERE r.id = ANY(CAST(:run_ids AS uuid[])) AND r.state = 'delegated' AND t.id = r.task_id
""")

# Indexes not backing a constraint: dropped while history is poured in, then built again from
# their own definitions (one sort each instead of millions of random inserts).
SECONDARY_INDEXES = text("""
    SELECT i.indexname, i.indexdef FROM pg_indexes AS i
    WHERE i.schemaname = current_schema() AND i.tablename = ANY(CAST(:tables AS text[]))
      AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)
    ORDER BY i.indexname
""")
# Foreign keys are not checked while history is poured in: it is consistent by construction.
SKIP_TRIGGERS = text("SET LOCAL session_replication_role = replica")
RUN_ROWS = text("SELECT count(*) FROM runs")
TABLE_BYTES = text("""
    SELECT coalesce(sum(pg_total_relation_size(CAST(name AS regclass))), 0)
    FROM unnest(CAST(:tables AS text[])) AS name
""")


def scratch_url(url: str, database: str) -> str:
    """``url`` pointing at ``database`` on the same server, as the same user."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


class HistoryLedger:
    """A scratch ledger database the benchmark fills with history; created and dropped here."""

    def __init__(self, admin: AsyncEngine, engine: AsyncEngine, database: str) -> None:
        """Use ``connect``."""
        self._admin = admin
        self._engine = engine
        self.database = database

    @classmethod
    async def create(cls, url: str, database: str) -> HistoryLedger:
        """Create ``database`` (dropped first if a killed run left it) on the server of ``url``.

        It is empty: migrate it (``migrations.upgrade``) before filling it.
        """
        admin = create_engine(url, pool_size=1, application_name="taskmesh-bench-admin")
        try:
            await _drop_database(admin, database)
            await _execute_outside_transaction(admin, f'CREATE DATABASE "{database}"')
        except BaseException:
            await admin.dispose()
            raise
        engine = create_engine(
            scratch_url(url, database), pool_size=1, application_name="taskmesh-bench-history"
        )
        return cls(admin, engine, database)

    async def drop(self) -> None:
        """Close the pool and drop the database."""
        await self._engine.dispose()
        try:
            await _drop_database(self._admin, self.database)
        finally:
            await self._admin.dispose()

    async def add_due_runs(self, count: int, now: object) -> None:
        """``count`` pending runs due a minute before ``now`` (see ``FILL_DUE``)."""
        params = {"count": count, "now": now, "label": LABEL, "tag": DUE_TAG}
        with translated_errors():
            async with self._engine.begin() as connection:
                await connection.execute(FILL_DUE, params)

    async def add_history(self, first: int, last: int, now: object, chunk: int) -> None:
        """Finished runs numbered ``first``..``last`` (inclusive), ``chunk`` per transaction.

        Secondary indexes are dropped meanwhile and built again after, then the tables are
        vacuumed and analysed: the schema ends exactly as the migrations made it.
        """
        with translated_errors():
            async with self._engine.connect() as connection:
                tables = {"tables": list(HISTORY_TABLES)}
                indexes = (await connection.execute(SECONDARY_INDEXES, tables)).all()
                await connection.rollback()
            await self._without(indexes, self._pour(first, last, now, chunk))
            for table in HISTORY_TABLES:
                await _execute_outside_transaction(self._engine, f"VACUUM ANALYZE {table}")

    async def _without(self, indexes: Sequence[Row[Any]], work: Awaitable[None]) -> None:
        """Await ``work`` with ``indexes`` dropped; build them again even if it fails."""
        async with self._engine.begin() as connection:
            for index in indexes:
                await connection.execute(text(f'DROP INDEX "{index.indexname}"'))
        try:
            await work
        finally:
            async with self._engine.begin() as connection:
                for index in indexes:
                    await connection.execute(text(index.indexdef))

    async def _pour(self, first: int, last: int, now: object, chunk: int) -> None:
        """Insert the history rows, ``chunk`` runs per transaction."""
        params: dict[str, object] = {
            "now": now,
            "regions": list(REGIONS),
            "label": LABEL,
            "tag": HISTORY_TAG,
        }
        for start in range(first, last + 1, chunk):
            async with self._engine.begin() as connection:
                await connection.execute(SKIP_TRIGGERS)
                bounds = {"first": start, "last": min(last, start + chunk - 1)}
                await connection.execute(FILL_HISTORY, {**params, **bounds})

    async def return_claimed(self, run_ids: Sequence[UUID]) -> None:
        """Put claimed runs back to pending, as they were before the claim."""
        with translated_errors():
            async with self._engine.begin() as connection:
                await connection.execute(RETURN_CLAIMED, {"run_ids": list(run_ids)})

    async def size(self) -> tuple[int, int]:
        """Rows in ``runs`` and bytes of the history tables with their indexes."""
        with translated_errors():
            async with self._engine.connect() as connection:
                rows = (await connection.execute(RUN_ROWS)).scalar_one()
                size = await connection.execute(TABLE_BYTES, {"tables": list(HISTORY_TABLES)})
                return int(rows), int(size.scalar_one())


async def _execute_outside_transaction(engine: AsyncEngine, statement: str) -> None:
    """Run a statement PostgreSQL refuses inside a transaction (CREATE DATABASE, VACUUM)."""
    with translated_errors():
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.execute(text(statement))


async def _drop_database(admin: AsyncEngine, database: str) -> None:
    await _execute_outside_transaction(admin, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
