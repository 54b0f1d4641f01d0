"""The reaper: takes back the runs of regions whose ledger heartbeat went stale.

Reaping is a singleton duty: among several masters only the holder of the ``reaper`` advisory
lock reaps; the others stand by and try to take the lock again every pass. Reaped runs that had
not started go back to pending (the dispatcher re-delegates them when a region has credit);
running ones become lost and follow their retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import DEFAULT_LOST_RETRY_LIMIT, Leadership, Ledger
from taskmesh.common.model import ReapResult
from taskmesh.common.topology import Topology
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.region_clients import RegionClients

log = logging.getLogger(__name__)

DUTY = "master-reaper"
MIN_PASS_INTERVAL = 0.2  # seconds


class Reaper:
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
        self._ledger = ledger
        self._regions = regions
        self._clock = clock
        self._timeout = topology.master.region_heartbeat_timeout
        self._interval = max(MIN_PASS_INTERVAL, self._timeout.total_seconds() / 4)
        self._lost_retries = {region.name: region.lost_run_retries for region in topology.regions}
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Reap no more; ``run`` returns once the pass in flight is finished."""
        self._stopping.set()

    async def run(self) -> None:
        """Reap while holding the duty; otherwise stand by and try to take it again."""
        while not self._stopping.is_set():
            try:
                async with self._ledger.singleton(DUTY) as leadership:
                    if leadership.held:
                        await self._reap_while_leader(leadership)
            except LedgerUnavailableError as error:
                log.warning("reaper: the ledger is unavailable: %s", error)
            await self._pause()

    async def _reap_while_leader(self, leadership: Leadership) -> None:
        """Reap a pass per interval until stopped or the lock is lost."""
        while not self._stopping.is_set() and not leadership.lost.is_set():
            await self.reap_once()
            await self._pause()

    async def _pause(self) -> None:
        """Sleep one interval, or until stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._interval):
                await self._stopping.wait()

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
