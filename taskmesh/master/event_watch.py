"""Following the ledger's event log for ``WatchEvents``: batches as their transactions commit.

Events come in commit-safe order (see ``ledger.follow_events``): an event whose transaction is
still open holds back the newer ones until it commits, so a tail never steps past it. The
ledger's NOTIFY only announces due runs, not every transition, so a watch polls the log
(one indexed range query per ``POLL_SECONDS``) and sends an empty batch now and then so that
clients and proxies can tell a quiet stream from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from taskmesh.common.errors import ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import EventCursor, EventFilter, RunEvent

POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 10.0
BATCH = 500


async def start_cursor(ledger: Ledger, after_id: int) -> EventCursor:
    """Where a watch starts: after event ``after_id``, or at the present when it is 0."""
    if after_id < 0:
        raise ValidationError("after_id", f"must not be negative, got {after_id}")
    return await ledger.event_cursor(after_id)


async def watch_events(
    ledger: Ledger, filters: EventFilter, cursor: EventCursor, stopping: asyncio.Event
) -> AsyncIterator[list[RunEvent]]:
    """Batches of events after ``cursor`` in commit-safe order; empty ones are keep-alives."""
    sent_at = time.monotonic()
    while not stopping.is_set():
        page = await ledger.follow_events(cursor, BATCH, filters)
        events, cursor = page.events, page.cursor
        if events or time.monotonic() - sent_at >= KEEPALIVE_SECONDS:
            yield events
            sent_at = time.monotonic()
        if len(events) < BATCH:
            await _pause(stopping)


async def _pause(stopping: asyncio.Event) -> None:
    """Wait one poll interval, or until the master stops."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(POLL_SECONDS):
            await stopping.wait()
