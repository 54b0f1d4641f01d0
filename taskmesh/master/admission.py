"""Admission control: refuse submissions while the pending backlog is at its bound.

Counting pending runs is one indexed query, too costly per submit at thousands per second, so
the count is refreshed at most once per ``REFRESH_SECONDS`` and raised locally by each admitted
submit in between.
"""

from __future__ import annotations

import asyncio
import time

from taskmesh.common.errors import OverloadedError
from taskmesh.common.ledger import Ledger

REFRESH_SECONDS = 1.0


class Admission:
    """Guards the ledger's pending backlog at ``max_pending_runs``."""

    def __init__(self, ledger: Ledger, max_pending_runs: int) -> None:
        """Admit submissions while fewer than ``max_pending_runs`` runs are pending."""
        self._ledger = ledger
        self._limit = max_pending_runs
        self._pending = 0
        self._counted_at = -REFRESH_SECONDS
        self._lock = asyncio.Lock()

    async def admit(self) -> None:
        """Return when one more run may be submitted; ``OverloadedError`` otherwise."""
        await self._refresh()
        if self._pending >= self._limit:
            raise OverloadedError(
                f"{self._pending} runs are pending, the limit is {self._limit}: retry later",
                retry_after=REFRESH_SECONDS,
            )
        self._pending += 1

    async def _refresh(self) -> None:
        """Recount pending runs when the last count is older than ``REFRESH_SECONDS``."""
        if time.monotonic() - self._counted_at < REFRESH_SECONDS:
            return
        async with self._lock:
            if time.monotonic() - self._counted_at < REFRESH_SECONDS:
                return
            self._pending = await self._ledger.count_pending()
            self._counted_at = time.monotonic()
