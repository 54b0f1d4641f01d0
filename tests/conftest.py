"""The PostgreSQL test harness: one throwaway server per session, a fresh database per test.

``postgres_server`` is a throwaway ``EmbeddedPostgres`` (fsync off, trust auth) started on first
use and stopped at session end, also on Ctrl-C (pytest tears fixtures down) and, as a backstop,
at interpreter exit. ``template_database`` is migrated once; ``database_url`` is a fresh
``FILE_COPY`` of it per test and ``empty_database_url`` a fresh database with no schema. Admin
statements go over one asyncpg connection on a private event loop: ~30 ms per copy, where a
``psql`` process per statement costs ~70 ms.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import asyncpg
import pytest

from taskmesh.common.embedded_postgres import EmbeddedPostgres

TEMPLATE_DATABASE = "taskmesh_template"

T = TypeVar("T")


class DatabaseAdmin:
    """Creates and drops databases over one connection driven by its own event loop.

    The loop is private, never set as the thread's current loop, and only run between tests,
    so it cannot clash with the per-test loops of pytest-asyncio.
    """

    def __init__(self, server: EmbeddedPostgres) -> None:
        self._server = server
        self._loop = asyncio.new_event_loop()
        self._connection: asyncpg.Connection = self._run(asyncpg.connect(server.url()))
        self._numbers = itertools.count(1)

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one coroutine to completion on the private loop."""
        return self._loop.run_until_complete(coroutine)

    def execute(self, statement: str, *arguments: object) -> None:
        """Run one admin statement in the maintenance database."""
        self._run(self._connection.execute(statement, *arguments))

    def create(self, template: str | None = None, name: str | None = None) -> str:
        """Create a database (a FILE_COPY of ``template`` if given) and return its name."""
        name = name or f"test_{next(self._numbers)}"
        source = f"TEMPLATE {_identifier(template or 'template1')} STRATEGY FILE_COPY"
        self.execute(f"CREATE DATABASE {_identifier(name)} {source}")
        return name

    def drop(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self.execute(f"DROP DATABASE IF EXISTS {_identifier(name)} WITH (FORCE)")

    def seal_template(self, name: str) -> None:
        """Turn ``name`` into a template nobody connects to, so copies never wait for it."""
        sealed = "IS_TEMPLATE true ALLOW_CONNECTIONS false"
        self.execute(f"ALTER DATABASE {_identifier(name)} WITH {sealed}")
        self.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )

    @contextmanager
    def fresh_database(self, template: str | None = None) -> Iterator[str]:
        """A new database's URL, dropped when the block ends."""
        name = self.create(template)
        try:
            yield self._server.url(name)
        finally:
            self.drop(name)

    def close(self) -> None:
        """Close the connection and the private loop."""
        try:
            self._run(self._connection.close())
        finally:
            self._loop.close()


def _identifier(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--chaos-full``: run the chaos scenarios (tests/chaos) at full size."""
    parser.addoption(
        "--chaos-full",
        action="store_true",
        help="run tests/chaos at full size (e.g. 1,000 queued runs) instead of the reduced one",
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[EmbeddedPostgres]:
    """The session's throwaway PostgreSQL, stopped at session end or interpreter exit."""
    server = EmbeddedPostgres.throwaway()
    atexit.register(server.stop)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        atexit.unregister(server.stop)


@pytest.fixture(scope="session")
def database_admin(postgres_server: EmbeddedPostgres) -> Iterator[DatabaseAdmin]:
    """Creates and drops the per-test databases."""
    admin = DatabaseAdmin(postgres_server)
    yield admin
    admin.close()


@pytest.fixture(scope="session")
def template_database(postgres_server: EmbeddedPostgres, database_admin: DatabaseAdmin) -> str:
    """The name of a database migrated to head once per session, copied for each test."""
    from taskmesh.common.ledger.migrations import upgrade

    name = database_admin.create(name=TEMPLATE_DATABASE)
    upgrade(postgres_server.url(name))
    database_admin.seal_template(name)
    return name


@pytest.fixture
def database_url(database_admin: DatabaseAdmin, template_database: str) -> Iterator[str]:
    """The URL of a fresh, migrated ledger database of this test's own, dropped after it."""
    with database_admin.fresh_database(template_database) as url:
        yield url


@pytest.fixture
def empty_database_url(database_admin: DatabaseAdmin) -> Iterator[str]:
    """The URL of a fresh database without any schema (for migration tests), dropped after."""
    with database_admin.fresh_database() as url:
        yield url
