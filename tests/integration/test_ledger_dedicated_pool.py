"""A dedicated pool (the dispatcher's): its own connections, used without a ping at checkout."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import NullPool, TextClause, text
from sqlalchemy.ext.asyncio import create_async_engine

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.engine import asyncpg_url

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NAME = "taskmesh-test-dedicated"

TERMINATE = text(
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = :name"
)
CONNECTIONS = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")


async def admin(database_url: str, query: TextClause, name: str) -> int:
    """Run one counting query on a connection of no pool's."""
    engine = create_async_engine(asyncpg_url(database_url), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(query, {"name": name})).scalar_one())
    finally:
        await engine.dispose()


async def test_a_dedicated_pool_has_its_own_connection(ledger: Ledger, database_url: str) -> None:
    dedicated = ledger.dedicated(NAME)
    try:
        assert await dedicated.next_ready_at(NOW) is None
        assert await admin(database_url, CONNECTIONS, NAME) == 1
    finally:
        await dedicated.close()


async def test_a_killed_connection_fails_one_call_then_is_replaced(
    ledger: Ledger, database_url: str
) -> None:
    """No ping at checkout: the first call after a server-side disconnect fails as unavailable
    (the dispatcher backs off and tries again), and the next one gets a fresh connection."""
    dedicated = ledger.dedicated(NAME)
    try:
        await dedicated.next_ready_at(NOW)
        assert await admin(database_url, TERMINATE, NAME) == 1
        await asyncio.sleep(0.1)
        with pytest.raises(LedgerUnavailableError):
            await dedicated.next_ready_at(NOW)
        assert await dedicated.next_ready_at(NOW) is None
    finally:
        await dedicated.close()
