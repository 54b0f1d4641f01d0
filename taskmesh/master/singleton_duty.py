"""A periodic duty that only one master performs at a time, under a PostgreSQL advisory lock.

Every master runs the loop; the holder of the duty's lock does a pass per interval, the others
stand by and try to take the lock again each interval. When the lock is lost (its connection
dropped) the holder stops at once and competes again, so a standby takes over within about
one interval of the active master dying.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import Leadership, Ledger

log = logging.getLogger(__name__)


class SingletonDuty(abc.ABC):
    """Runs ``run_pass`` every ``interval`` seconds while holding the lock named ``duty``."""

    def __init__(self, ledger: Ledger, duty: str, interval: float) -> None:
        """Compete for ``duty`` on ``ledger``; pass and retry every ``interval`` seconds."""
        self._ledger = ledger
        self._duty = duty
        self._interval = interval
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Do no more passes; ``run`` returns once the pass in flight is finished."""
        self._stopping.set()

    async def run(self) -> None:
        """Do passes while holding the duty; otherwise stand by and try to take it again."""
        while not self._stopping.is_set():
            try:
                async with self._ledger.singleton(self._duty) as leadership:
                    if leadership.held:
                        await self._run_while_leader(leadership)
            except LedgerUnavailableError as error:
                log.warning("%s: the ledger is unavailable: %s", self._duty, error)
            await self._pause()

    @abc.abstractmethod
    async def run_pass(self) -> object:
        """One pass of the duty."""

    def on_acquired(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called each time this master takes the duty, before its first pass."""

    async def _run_while_leader(self, leadership: Leadership) -> None:
        """A pass per interval until stopped or the lock is lost."""
        self.on_acquired()
        while not self._stopping.is_set() and not leadership.lost.is_set():
            await self.run_pass()
            await self._pause()

    async def _pause(self) -> None:
        """Sleep one interval, or until stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._interval):
                await self._stopping.wait()
