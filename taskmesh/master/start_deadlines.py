"""The start-deadline duty: runs that did not start within their schedule-to-start bound.

A region times a run out when it pops it too late, but a run can also wait past its bound in
the ledger (``pending``, no region had credit) or in a saturated region's queue (``delegated``,
never popped). A singleton duty (``master-start-deadlines`` advisory lock) sweeps those every
``PASS_INTERVAL`` and ends them ``timed_out``; see ``common.ledger.deadlines``.
"""

from __future__ import annotations

import logging

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import TransitionOutcome
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.singleton_duty import SingletonDuty

log = logging.getLogger(__name__)

DUTY = "master-start-deadlines"
PASS_INTERVAL = 1.0  # seconds


class StartDeadlines(SingletonDuty):
    """Times out unstarted runs past their schedule-to-start bound, a pass at a time."""

    def __init__(
        self, ledger: Ledger, *, clock: Clock = utc_now, interval: float = PASS_INTERVAL
    ) -> None:
        """Sweep ``ledger`` every ``interval`` seconds by ``clock``."""
        super().__init__(ledger, DUTY, interval)
        self._clock = clock

    async def run_pass(self) -> list[TransitionOutcome]:
        """One sweep."""
        return await self.sweep_once()

    async def sweep_once(self) -> list[TransitionOutcome]:
        """Time out every run past its bound now; returns what the ledger did."""
        outcomes = await self._ledger.time_out_unstarted(self._clock())
        applied = [outcome for outcome in outcomes if outcome.applied]
        if applied:
            log.info("%d run(s) timed out: not started within their bound", len(applied))
        return outcomes
