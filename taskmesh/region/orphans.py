"""Runs the ledger puts in this region that the region does not hold: orphans, handed back.

Two ways leave them. A region that dies and restarts before the master's reaper notices loses
its queue and its workers' assignments with its memory, while its fresh heartbeats keep the
reaper away. So a region starting up first marks lost the runs the ledger says it assigned or
ran (a worker may have started them; they follow their retry policy) with
``reclaim_previous_work``. The runs still delegated to it it holds nowhere, like those of a
master that died between claiming runs (pending → delegated) and its Delegate call:
``DelegationAudit`` periodically releases runs delegated here long ago that the region holds
neither queued nor on a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol
from uuid import UUID

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.model import ReapResult, TransitionOutcome
from taskmesh.common.retry_policies import ledger_retrying
from taskmesh.region.runtime import RegionRuntime

log = logging.getLogger(__name__)

AUDIT_INTERVAL = 5.0  # seconds between audits
ORPHAN_AGE = timedelta(seconds=10)  # well past a Delegate call's retries


class OrphanStore(Protocol):
    """The part of the ledger the orphan handling needs."""

    async def reap_region(
        self, region: str, now: datetime, *, lost_retry_limit: int = ..., started_only: bool = ...
    ) -> ReapResult:
        """Take back a region's runs."""
        ...

    async def delegated_before(
        self, region: str, before: datetime, keep: Callable[[UUID, int], bool] = ...
    ) -> list[tuple[UUID, int]]:
        """Runs delegated to ``region`` before ``before``, still delegated, that ``keep`` keeps."""
        ...

    async def release_runs(
        self, items: Sequence[tuple[UUID, int]], now: datetime
    ) -> list[TransitionOutcome]:
        """Put delegated runs back to pending."""
        ...


async def reclaim_previous_work(runtime: RegionRuntime, ledger: OrphanStore) -> ReapResult:
    """Mark lost what a previous process of this region assigned or ran, before serving."""
    async for attempt in ledger_retrying():
        with attempt:
            result = await ledger.reap_region(
                runtime.name,
                runtime.now(),
                lost_retry_limit=runtime.config.lost_run_retries,
                started_only=True,
            )
    if result.lost:
        log.warning(
            "region %s: %d runs a previous process assigned or ran are lost",
            runtime.name,
            len(result.lost),
        )
    return result


class DelegationAudit:
    """Releases runs delegated here long ago that the region does not hold."""

    def __init__(
        self,
        runtime: RegionRuntime,
        ledger: OrphanStore,
        *,
        interval: float = AUDIT_INTERVAL,
        age: timedelta = ORPHAN_AGE,
    ) -> None:
        self._runtime = runtime
        self._ledger = ledger
        self._interval = interval
        self._age = age
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stopping.set()

    async def run(self) -> None:
        """Audit every interval until stopped; an unavailable ledger just skips a round."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)
            if self._stopping.is_set() or self._runtime.draining:
                continue
            try:
                await self.audit_once()
            except LedgerUnavailableError as error:
                log.info("delegation audit skipped, the ledger is unavailable: %s", error)
            except Exception:  # a bug: log it, the next round may succeed
                log.exception("delegation audit failed")

    async def audit_once(self) -> int:
        """Release the orphaned delegations once; returns how many were released."""
        runtime = self._runtime
        orphans = await self._ledger.delegated_before(
            runtime.name,
            runtime.now() - self._age,
            lambda run_id, epoch: not self._holds(run_id, epoch),
        )
        if not orphans:
            return 0
        outcomes = await self._ledger.release_runs(orphans, runtime.now())
        released = sum(1 for outcome in outcomes if outcome.applied)
        log.warning("released %d runs delegated here that never arrived", released)
        return released

    def _holds(self, run_id: UUID, epoch: int) -> bool:
        """True when the region holds the run under this epoch, queued or on a worker."""
        return self._runtime.held_epoch(run_id) == epoch
