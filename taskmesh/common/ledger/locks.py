"""Singleton duties (cron materialisation, reaping) under PostgreSQL advisory locks."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg
from sqlalchemy.engine import URL

from taskmesh.common.ledger.engine import CONNECT_TIMEOUT_SECONDS, translated_errors
from taskmesh.common.ledger.notifications import plain_dsn


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a duty's name."""
    digest = hashlib.sha256(f"taskmesh:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(slots=True)
class Leadership:
    """Whether this process holds a singleton duty; ``lost`` is set if the lock goes away."""

    name: str
    held: bool
    lost: asyncio.Event = field(default_factory=asyncio.Event)


@asynccontextmanager
async def singleton(url: URL, name: str) -> AsyncIterator[Leadership]:
    """Try once to take the duty ``name``; hold it until the block exits or the link drops.

    The lock lives in a dedicated session, so PostgreSQL frees it the moment this process
    or its connection dies, and a standby can take over.
    """
    with translated_errors():
        connection = await asyncpg.connect(plain_dsn(url), timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        with translated_errors():
            held = bool(
                await connection.fetchval("SELECT pg_try_advisory_lock($1)", lock_key(name))
            )
        leadership = Leadership(name, held)
        connection.add_termination_listener(lambda _: leadership.lost.set())
        yield leadership
    finally:
        if not connection.is_closed():
            await connection.close()  # ends the session, releasing the lock
