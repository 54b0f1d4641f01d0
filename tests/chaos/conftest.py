"""The chaos cluster: real daemons on a PostgreSQL of its own, shared by the module's scenarios.

The ledger server is a throwaway ``EmbeddedPostgres`` separate from the session's test server,
because the ledger-outage scenario stops and restarts it. ``--chaos-full`` runs the scenarios
at full size; without it (as in ``make test``) each runs a reduced but real version. The table
of every scenario's figures is printed at the end and written to ``artifacts/chaos-table.txt``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from chaos_cluster import ChaosCluster
from chaos_table import ChaosTable
from invariants import InvariantChecker

from taskmesh.common.embedded_postgres import EmbeddedPostgres
from taskmesh.common.ledger.migrations import upgrade

DATABASE = "chaos"


async def _create_database(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await connection.close()


@pytest.fixture(scope="module")
def chaos_postgres() -> Iterator[EmbeddedPostgres]:
    """A throwaway PostgreSQL of the chaos suite's own, with a migrated ledger database."""
    server = EmbeddedPostgres.throwaway()
    try:
        server.start()
        asyncio.run(_create_database(server.url()))
        upgrade(server.url(DATABASE))
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def full(request: pytest.FixtureRequest) -> bool:
    """True under ``--chaos-full``: full-size scenarios."""
    return bool(request.config.getoption("--chaos-full"))


@pytest.fixture(scope="module")
def chaos_cluster(
    tmp_path_factory: pytest.TempPathFactory, chaos_postgres: EmbeddedPostgres
) -> Iterator[ChaosCluster]:
    """Two regions of two workers (4 slots each) and one master, stopped after the module."""
    cluster = ChaosCluster(
        tmp_path_factory.mktemp("chaos"), chaos_postgres, DATABASE, workers=2, slots=4
    )
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def checker(chaos_cluster: ChaosCluster) -> InvariantChecker:
    """The invariant checker over the chaos ledger."""
    return InvariantChecker(chaos_cluster.database_url, chaos_cluster.base / "executions.log")


@pytest.fixture(scope="module")
def chaos_table(request: pytest.FixtureRequest) -> Iterator[ChaosTable]:
    """Collects each scenario's row; printed and saved when the module ends."""
    table = ChaosTable()
    yield table
    text = table.render()
    artifacts = Path(request.config.rootpath) / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / "chaos-table.txt").write_text(text + "\n")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        for line in text.splitlines():
            reporter.write_line(line)
