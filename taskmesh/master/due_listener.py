"""The ledger's NOTIFY about due runs, forwarded to the dispatcher within milliseconds."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import Ledger
from taskmesh.common.retry_policies import ledger_backoff

log = logging.getLogger(__name__)


class DueListener:
    """Holds a LISTEN connection and calls ``on_due`` for every notification.

    It does no work of its own, so shutdown simply cancels it. While the ledger cannot be
    reached it retries with backoff; the dispatcher's timer covers the gap.
    """

    def __init__(self, ledger: Ledger, on_due: Callable[[], None]) -> None:
        """Forward the ledger's due-run notifications to ``on_due``."""
        self._ledger = ledger
        self._on_due = on_due
        self._backoff = ledger_backoff()

    async def run(self) -> None:
        """Listen until cancelled, re-listening after a failure."""
        while True:
            try:
                await self._listen()
            except LedgerUnavailableError as error:
                pause = self._backoff.next_delay()
                log.warning("due-run listener: %s; listening again in %.1fs", error, pause)
                await asyncio.sleep(pause)

    async def _listen(self) -> None:
        """One LISTEN session: forward every notification while the connection lives."""
        async with self._ledger.listen_for_due_runs() as due:
            self._backoff.reset()
            self._on_due()  # runs may have become due while nobody listened
            while True:
                await due.wait()
                due.clear()
                self._on_due()
