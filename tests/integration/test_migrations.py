"""Migrations build exactly the declared schema, and come down and go up again cleanly.

Two independent checks: Alembic's autogenerate comparison (columns, types, defaults,
indexes, keys) must find nothing to do, and the PostgreSQL catalogs of a migrated database
and of one built by ``metadata.create_all`` must match definition for definition (this also
covers CHECK constraints and partial-index predicates, which Alembic does not compare).
These tests are synchronous: ``migrations.upgrade`` runs its own event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection

from taskmesh.common.ledger import migrations
from taskmesh.common.ledger.engine import create_engine
from taskmesh.common.ledger.schema import metadata

T = TypeVar("T")

CATALOG_QUERIES = {
    "columns": """
        SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               pg_get_expr(d.adbin, d.adrelid)
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE n.nspname = 'public' AND c.relkind = 'r' AND a.attnum > 0
          AND NOT a.attisdropped AND c.relname <> 'alembic_version'
    """,
    "constraints": """
        SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
        FROM pg_constraint AS k JOIN pg_class AS c ON c.oid = k.conrelid
        JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relname <> 'alembic_version'
    """,
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' AND tablename <> 'alembic_version'
    """,
    "sequences": "SELECT sequencename, data_type FROM pg_sequences WHERE schemaname = 'public'",
}


def on_connection(url: str, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on a sync connection to ``url`` (asyncpg under ``run_sync``)."""

    async def run() -> T:
        """Connect, run ``work`` in a transaction, dispose."""
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.begin() as connection:
                return await connection.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def schema_diff(connection: Connection, target: MetaData) -> list[Any]:
    """What autogenerate would change to make the database match ``target``."""
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return list(compare_metadata(context, target))


def catalog(connection: Connection) -> dict[str, set[tuple[Any, ...]]]:
    """Every column, constraint, index and sequence of the public schema, as definitions."""
    return {
        name: {tuple(row) for row in connection.execute(text(query))}
        for name, query in CATALOG_QUERIES.items()
    }


def public_tables(connection: Connection) -> set[str]:
    """The tables in the public schema."""
    query = text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return set(connection.execute(query).scalars())


def test_upgrade_head_builds_exactly_the_declared_schema(empty_database_url: str) -> None:
    """On an empty database, upgrade head leaves autogenerate with nothing to do."""
    migrations.upgrade(empty_database_url)
    assert on_connection(empty_database_url, lambda c: schema_diff(c, metadata)) == []
    # The comparison is not vacuous: against an empty declaration it sees every table.
    removed = on_connection(empty_database_url, lambda c: schema_diff(c, MetaData()))
    assert {diff[1].name for diff in removed if diff[0] == "remove_table"} == set(metadata.tables)


def test_migrated_catalog_equals_create_all(database_url: str, empty_database_url: str) -> None:
    """Migrated and create_all-built databases agree on every catalog definition."""
    on_connection(empty_database_url, metadata.create_all)
    migrated = on_connection(database_url, catalog)
    declared = on_connection(empty_database_url, catalog)
    for kind, definitions in declared.items():
        assert migrated[kind] == definitions, kind
    assert len(declared["constraints"]) > 30


def test_downgrade_base_drops_everything_and_upgrade_works_again(
    empty_database_url: str,
) -> None:
    """Down to base leaves no taskmesh table; up again reaches head with the same schema."""
    url = empty_database_url
    migrations.upgrade(url)
    assert asyncio.run(migrations.current_revision(url)) == migrations.head_revision()
    migrations.downgrade(url)
    assert on_connection(url, public_tables) <= {"alembic_version"}
    assert asyncio.run(migrations.current_revision(url)) is None
    migrations.upgrade(url)
    assert on_connection(url, public_tables) >= set(metadata.tables)
    assert on_connection(url, lambda c: schema_diff(c, metadata)) == []


def test_upgrade_is_idempotent_at_head(database_url: str) -> None:
    """Upgrading a database already at head changes nothing."""
    migrations.upgrade(database_url)
    assert asyncio.run(migrations.current_revision(database_url)) == migrations.head_revision()


async def test_migrations_refuse_to_run_inside_an_event_loop(database_url: str) -> None:
    """Called from async code, upgrade explains how to call it instead of deadlocking."""
    with pytest.raises(RuntimeError, match="to_thread"):
        migrations.upgrade(database_url)
    await asyncio.to_thread(migrations.upgrade, database_url)
