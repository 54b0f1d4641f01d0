"""The ledger's NOTIFY about due runs, forwarded to the dispatcher within milliseconds."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Protocol

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import Ledger
from taskmesh.common.retry_policies import ledger_backoff

log = logging.getLogger(__name__)


class DueRunsHandler(Protocol):
    """Who acts on due runs (the dispatcher)."""

    def wake(self) -> None:
        """Runs are claimable now."""
        ...

    def wake_at(self, ready_at: datetime) -> None:
        """Runs become claimable at ``ready_at``."""
        ...


class DueListener:
    """Holds a LISTEN connection and tells the handler when runs are, or will be, due.

    It does no work of its own, so shutdown simply cancels it. While the ledger cannot be
    reached it retries with backoff; the dispatcher's timer covers the gap.
    """

    def __init__(self, ledger: Ledger, handler: DueRunsHandler) -> None:
        """Forward the ledger's due-run notifications to ``handler``."""
        self._ledger = ledger
        self._handler = handler
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
            self._handler.wake()  # runs may have become due while nobody listened
            while True:
                notice = await due.take()
                if notice.earliest is not None:
                    self._handler.wake_at(notice.earliest)
                if notice.now:
                    self._handler.wake()
