"""Following the ledger's event log for ``WatchEvents``: batches as they are recorded.

The ledger's NOTIFY only announces due runs, not every transition, so a watch polls the log
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
from taskmesh.common.model import EventFilter, RunEvent

POLL_SECONDS = 0.1
KEEPALIVE_SECONDS = 10.0
BATCH = 500


async def start_cursor(ledger: Ledger, after_id: int) -> int:
    """Where a watch starts: after ``after_id``, or after the newest event when it is 0."""
    if after_id < 0:
        raise ValidationError("after_id", f"must not be negative, got {after_id}")
    return after_id or await ledger.last_event_id()


async def watch_events(
    ledger: Ledger, filters: EventFilter, cursor: int, stopping: asyncio.Event
) -> AsyncIterator[list[RunEvent]]:
    """Batches of events after ``cursor``, oldest first; empty batches are keep-alives."""
    sent_at = time.monotonic()
    while not stopping.is_set():
        events = await ledger.events_after(cursor, BATCH, filters)
        if events:
            cursor = events[-1].id
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
