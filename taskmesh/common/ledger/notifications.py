"""LISTEN for due runs, so a dispatcher wakes within milliseconds of a submit.

Each notification says when its runs become claimable: now (an empty payload), or at a later
instant (ISO 8601), so that the dispatcher can set a timer for it instead of polling.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from sqlalchemy.engine import URL

from taskmesh.common.ledger.changes import NOTIFY_CHANNEL
from taskmesh.common.ledger.engine import CONNECT_TIMEOUT_SECONDS, translated_errors

log = logging.getLogger(__name__)


def plain_dsn(url: URL) -> str:
    """The ``postgresql://`` DSN asyncpg itself understands."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class DueNotice:
    """What the notifications gathered since the last ``take`` said."""

    now: bool  # runs are claimable now (or the connection dropped: look anyway)
    earliest: datetime | None  # the earliest later ready time announced, if any


class DueSignal:
    """Notifications about due runs, gathered until their holder takes them."""

    def __init__(self) -> None:
        """Nothing announced yet."""
        self._arrived = asyncio.Event()
        self._now = False
        self._earliest: datetime | None = None

    def announce(self, payload: str) -> None:
        """Take one notification's payload (empty or unreadable: claimable now)."""
        at = _ready_time(payload)
        if at is None:
            self._now = True
        elif self._earliest is None or at < self._earliest:
            self._earliest = at
        self._arrived.set()

    async def take(self) -> DueNotice:
        """Wait for notifications; what they said, forgotten here once returned."""
        await self._arrived.wait()
        self._arrived.clear()
        notice = DueNotice(self._now, self._earliest)
        self._now, self._earliest = False, None
        return notice


def _ready_time(payload: str) -> datetime | None:
    """The ready time a payload names; None for now (also for one this version cannot read)."""
    if not payload:
        return None
    try:
        at = datetime.fromisoformat(payload)
    except ValueError:
        log.warning("due-run notification with an unreadable time %r: taken as now", payload)
        return None
    return at if at.tzinfo is not None else None


@asynccontextmanager
async def due_runs_listener(url: URL) -> AsyncIterator[DueSignal]:
    """A ``DueSignal`` fed by LISTEN on a dedicated connection.

    When the connection drops, the signal says "now", so the holder claims and can re-listen.
    """
    signal = DueSignal()
    with translated_errors():
        connection = await asyncpg.connect(plain_dsn(url), timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        await connection.add_listener(NOTIFY_CHANNEL, lambda *args: signal.announce(args[-1]))
        connection.add_termination_listener(lambda _: signal.announce(""))
        yield signal
    finally:
        if not connection.is_closed():
            await connection.close()
