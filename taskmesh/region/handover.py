"""The region's graceful shutdown: hand queued runs back, let workers finish, flush.

Order matters: the region first stops taking delegations and hands its queue back to the
ledger (delegated → pending) so the master can place those runs elsewhere at once; then it
asks workers to drain and waits, within ``shutdown_timeout``, until they finished their runs,
had the results written and acked, and disconnected. Whatever is still out then is taken back
(unstarted runs handed back, running ones lost, so their retry policy applies), and the writer
is flushed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from datetime import datetime
from typing import Protocol
from uuid import UUID

from taskmesh.common.model import RegionState, TransitionOutcome
from taskmesh.common.retry_policies import ledger_retrying
from taskmesh.region import messages
from taskmesh.region.heartbeat import Heartbeat
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_sessions import WorkerSessions

log = logging.getLogger(__name__)

FINAL_FLUSH = 5.0  # seconds the writer still gets after the deadline passed


class RunReleaser(Protocol):
    """The part of the ledger that takes runs back."""

    async def release_runs(
        self, items: Sequence[tuple[UUID, int]], now: datetime
    ) -> list[TransitionOutcome]:
        """Put delegated runs back to pending."""
        ...


class Handover:
    """Runs the shutdown steps against a deadline; ``force`` cuts every wait short."""

    def __init__(
        self,
        runtime: RegionRuntime,
        sessions: WorkerSessions,
        heartbeat: Heartbeat,
        ledger: RunReleaser,
        force: asyncio.Event,
    ) -> None:
        self._runtime = runtime
        self._sessions = sessions
        self._heartbeat = heartbeat
        self._ledger = ledger
        self._force = force
        self._deadline = 0.0

    async def run(self) -> bool:
        """Shut the region's work down; True when every run was handed back or finished."""
        runtime = self._runtime
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + runtime.config.shutdown_timeout.total_seconds()
        runtime.draining = True
        await self._heartbeat.beat(RegionState.DRAINING)
        await self.hand_back_queue()
        self._drain_workers()
        await self._within(self._workers_done(), self._remaining())
        for worker in list(runtime.registry):
            self._sessions.disconnect(worker, "was still connected at the deadline", failure=False)
        handed_back = await self.hand_back_queue()
        flushed = await self._within(runtime.writer.flush(), max(self._remaining(), FINAL_FLUSH))
        return handed_back and flushed and runtime.writer.pending == 0

    async def hand_back_queue(self) -> bool:
        """Release every queued run to the ledger (delegated → pending); False if it failed."""
        writer = self._runtime.writer
        # Runs that came back from workers have their assigned → delegated still in the writer.
        await self._within(writer.flush(), self._remaining())
        items = [(q.run_id, q.epoch) for q in self._runtime.queue.drain()]
        if not items:
            return True
        released = await self._within(self._release(items), self._remaining())
        if not released:
            log.warning("could not hand %d queued runs back; the master will reap them", len(items))
        return released

    async def _release(self, items: list[tuple[UUID, int]]) -> None:
        """``release_runs`` retried while the ledger is unavailable."""
        now = self._runtime.now()
        async for attempt in ledger_retrying(self._remaining()):
            with attempt:
                outcomes = await self._ledger.release_runs(items, now)
        refused = sum(1 for outcome in outcomes if not outcome.applied)
        log.info("handed %d queued runs back (%d refused)", len(items) - refused, refused)

    def _drain_workers(self) -> None:
        """Ask every worker to finish its runs and disconnect."""
        grace = self._runtime.config.shutdown_timeout
        for worker in self._runtime.registry:
            worker.send(messages.drain("region shutting down", grace))

    async def _workers_done(self) -> None:
        """Return once every worker finished, had its results acked, and disconnected."""
        await self._runtime.registry.wait_empty()
        await self._runtime.writer.flush()

    def _remaining(self) -> float:
        """Seconds left until the deadline."""
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _within(self, work: Awaitable[object], seconds: float) -> bool:
        """Await ``work`` for at most ``seconds``, or until forced; True when it completed."""
        task = asyncio.ensure_future(work)
        forced = asyncio.ensure_future(self._force.wait())
        try:
            await asyncio.wait({task, forced}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            forced.cancel()
        if not task.done():
            task.cancel()
            return False
        if task.cancelled():
            return False
        if (error := task.exception()) is not None:
            log.warning("shutdown step failed: %r", error)
            return False
        return True
