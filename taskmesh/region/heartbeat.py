"""The region's rows in the ledger: its heartbeat (address, credit, state) and its workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Protocol

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.model import Region, RegionState, Worker, WorkerState
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.status import region_state

log = logging.getLogger(__name__)


class MembershipStore(Protocol):
    """The part of the ledger the heartbeat writes."""

    async def heartbeat_region(
        self, name: str, address: str, credit: int, now: datetime, *, state: RegionState = ...
    ) -> Region:
        """Register or refresh a region."""
        ...

    async def upsert_worker(
        self,
        worker_id: str,
        region: str,
        slots: int,
        now: datetime,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> Worker:
        """Register or re-register a worker."""
        ...

    async def heartbeat_workers(self, worker_ids: Collection[str], now: datetime) -> frozenset[str]:
        """Refresh workers' heartbeats; returns the ids not registered."""
        ...

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        """Mark a worker up, draining or down."""
        ...

    async def remove_worker(self, worker_id: str) -> bool:
        """Forget a worker."""
        ...


class Heartbeat:
    """Writes the heartbeat rows every ``heartbeat_interval``; its success is ledger liveness."""

    def __init__(self, runtime: RegionRuntime, store: MembershipStore) -> None:
        self._runtime = runtime
        self._store = store
        self._stopping = asyncio.Event()
        self.heartbeat_at: datetime | None = None  # of the last heartbeat the ledger took
        self.ledger_reachable = False

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stopping.set()

    async def run(self) -> None:
        """Beat every interval until stopped (the daemon beats once before it is ready)."""
        interval = self._runtime.config.heartbeat_interval.total_seconds()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval)
            if self._stopping.is_set():
                return
            try:
                await self.beat()
            except Exception:  # a bug or a refused write: log it, the next beat may succeed
                log.exception("heartbeat failed")

    async def beat(self, state: RegionState | None = None) -> bool:
        """Write the region's row and its workers' rows once; False when the ledger is away."""
        runtime = self._runtime
        now = runtime.now()
        state = state or region_state(runtime)
        try:
            await self._store.heartbeat_region(
                runtime.name, runtime.address, runtime.credit, now, state=state
            )
            await self._write_workers(now)
        except LedgerUnavailableError as error:
            if self.ledger_reachable:
                log.warning("heartbeat failed, the ledger is unavailable: %s", error)
            self.ledger_reachable = False
            return False
        self.heartbeat_at = now
        self.ledger_reachable = True
        return True

    async def _write_workers(self, now: datetime) -> None:
        """Apply joins, drains and departures, then refresh every connected worker's row."""
        registry = self._runtime.registry
        changes = registry.membership_changes()
        for worker_id, state in changes.items():
            if state is None:
                await self._store.remove_worker(worker_id)
            else:
                await self._register(worker_id, now, state)
        registry.membership_written(changes)
        connected = [worker.id for worker in registry]
        for worker_id in await self._store.heartbeat_workers(connected, now):
            await self._register(worker_id, now, WorkerState.UP)  # its row went missing

    async def _register(self, worker_id: str, now: datetime, state: WorkerState) -> None:
        """Upsert a connected worker's row in ``state``."""
        worker = self._runtime.registry.get(worker_id)
        if worker is None:
            return
        await self._store.upsert_worker(
            worker.id, self._runtime.name, worker.slots, now, labels=worker.labels
        )
        if state is not WorkerState.UP:
            await self._store.set_worker_state(worker.id, state)
