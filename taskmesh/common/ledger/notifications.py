"""LISTEN for due runs, so a dispatcher wakes within milliseconds of a submit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.engine import URL

from taskmesh.common.ledger.changes import NOTIFY_CHANNEL
from taskmesh.common.ledger.engine import CONNECT_TIMEOUT_SECONDS, translated_errors


def plain_dsn(url: URL) -> str:
    """The ``postgresql://`` DSN asyncpg itself understands."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@asynccontextmanager
async def due_runs_listener(url: URL) -> AsyncIterator[asyncio.Event]:
    """An event set whenever runs become due, on a dedicated connection.

    The holder waits on it with a timeout (its polling timer) and clears it before claiming.
    When the connection drops, the event is set so the holder claims and can re-listen.
    """
    wake = asyncio.Event()
    with translated_errors():
        connection = await asyncpg.connect(plain_dsn(url), timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        await connection.add_listener(NOTIFY_CHANNEL, lambda *_: wake.set())
        connection.add_termination_listener(lambda _: wake.set())
        yield wake
    finally:
        if not connection.is_closed():
            await connection.close()
