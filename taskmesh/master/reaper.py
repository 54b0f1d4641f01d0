"""The reaper: takes back the runs of regions whose ledger heartbeat went stale.

Reaping is a singleton duty: among several masters only the holder of the ``reaper`` advisory
lock reaps; the others stand by and try to take the lock again every pass. For one timeout
after taking the duty it only watches (see ``on_acquired``). Reaped runs that had
not started go back to pending (the dispatcher re-delegates them when a region has credit);
running ones become lost and follow their retry policy.
"""

from __future__ import annotations

import logging
import time

from taskmesh.common.ledger import DEFAULT_LOST_RETRY_LIMIT, Ledger
from taskmesh.common.model import ReapResult
from taskmesh.common.topology import Topology
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.region_clients import RegionClients
from taskmesh.master.singleton_duty import SingletonDuty

log = logging.getLogger(__name__)

DUTY = "master-reaper"
MIN_PASS_INTERVAL = 0.2  # seconds


class Reaper(SingletonDuty):
    """Finds stale regions and reaps them, a few times per heartbeat timeout."""

    def __init__(
        self,
        ledger: Ledger,
        regions: RegionClients,
        topology: Topology,
        *,
        clock: Clock = utc_now,
    ) -> None:
        """Reap regions silent for longer than the topology's region heartbeat timeout."""
        timeout = topology.master.region_heartbeat_timeout
        super().__init__(ledger, DUTY, max(MIN_PASS_INTERVAL, timeout.total_seconds() / 4))
        self._regions = regions
        self._clock = clock
        self._timeout = timeout
        self._lost_retries = {region.name: region.lost_run_retries for region in topology.regions}
        self._reap_after = 0.0  # monotonic time before which passes reap nothing

    def on_acquired(self) -> None:
        """Reap nothing for one timeout after taking the duty.

        The duty is (re)taken at start-up, by a standby after the active master died, and after
        a ledger outage. The heartbeats in the ledger may be stale then only because the
        regions could not write them (the ledger was away) or nobody looked; a region that is
        alive refreshes its row within the timeout, so only the really dead ones are reaped.
        """
        self._reap_after = time.monotonic() + self._timeout.total_seconds()

    async def run_pass(self) -> list[ReapResult]:
        """One reaping pass (none during the grace after taking the duty)."""
        if time.monotonic() < self._reap_after:
            return []
        return await self.reap_once()

    async def reap_once(self) -> list[ReapResult]:
        """Reap every region whose heartbeat is older than the timeout; returns what was done."""
        now = self._clock()
        results = []
        for region in await self._ledger.stale_regions(now, self._timeout):
            limit = self._lost_retries.get(region.name, DEFAULT_LOST_RETRY_LIMIT)
            result = await self._ledger.reap_region(region.name, now, lost_retry_limit=limit)
            self._forget_credit(region.name)
            log.warning(
                "region %s stopped heartbeating (last at %s): %d runs back to pending, %d lost",
                region.name,
                region.heartbeat_at.isoformat(),
                len(result.requeued),
                len(result.lost),
            )
            results.append(result)
        return results

    def _forget_credit(self, name: str) -> None:
        """Make the dispatcher ask a reaped region for its credit again before using it."""
        for client in self._regions:
            if client.name == name:
                client.forget_credit()
