"""What the dispatcher learns from due-run notifications: now, or the earliest later time."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from taskmesh.common.ledger.notifications import DueNotice, DueSignal

LATER = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def test_notifications_gathered_before_a_take_are_summed_up() -> None:
    signal = DueSignal()
    signal.announce((LATER + timedelta(hours=1)).isoformat())
    signal.announce(LATER.isoformat())
    assert await asyncio.wait_for(signal.take(), 1) == DueNotice(now=False, earliest=LATER)
    signal.announce("")
    assert await asyncio.wait_for(signal.take(), 1) == DueNotice(now=True, earliest=None)


async def test_an_unreadable_or_naive_time_counts_as_now() -> None:
    signal = DueSignal()
    signal.announce("soon")
    assert (await asyncio.wait_for(signal.take(), 1)).now
    signal.announce("2026-03-01T12:00:00")
    assert (await asyncio.wait_for(signal.take(), 1)).now


async def test_take_waits_for_a_notification() -> None:
    signal = DueSignal()
    taking = asyncio.ensure_future(signal.take())
    await asyncio.sleep(0.01)
    assert not taking.done()
    signal.announce("")
    assert (await asyncio.wait_for(taking, 1)).now
