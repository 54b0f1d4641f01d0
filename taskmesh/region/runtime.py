"""The region's live state, shared by its servicers and loops.

Everything runs on one event loop and no method here awaits, so each call sees and leaves a
consistent state without locks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from taskmesh.common.model import RunState
from taskmesh.common.topology import RegionConfig
from taskmesh.region import messages
from taskmesh.region.breakers import BreakerBoard
from taskmesh.region.holdings import HeldRun, QueuedRun
from taskmesh.region.ledger_writer import LedgerWriter
from taskmesh.region.metrics import RegionMetrics
from taskmesh.region.run_queue import RunQueue
from taskmesh.region.worker_registry import WorkerRegistry


def utc_now() -> datetime:
    """The current wall-clock time, timezone-aware."""
    return datetime.now(UTC)


@dataclass(eq=False)
class RegionRuntime:
    """Queue, workers, breakers and writer of one region, and the event that wakes assignment."""

    config: RegionConfig
    writer: LedgerWriter
    board: BreakerBoard
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = utc_now
    address: str = ""  # the gRPC address the master reaches the region at
    draining: bool = False
    desired_workers: int | None = None  # the autoscaler's latest figure; None without one
    heard_from_master: float | None = None  # ``clock`` time of the last Delegate (or probe)
    metrics: RegionMetrics = field(default_factory=lambda: RegionMetrics("unnamed"))
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    queue: RunQueue[QueuedRun] = field(init=False)
    registry: WorkerRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.queue = RunQueue(self.config.capacity, self.config.age_step, self.clock)
        self.registry = WorkerRegistry(self.board)
        self.metrics.watch(self)

    @property
    def name(self) -> str:
        """The region's name."""
        return self.config.name

    @property
    def credit(self) -> int:
        """How many more runs the region accepts now: free queue room, none while draining."""
        return 0 if self.draining else self.queue.credit

    def wake(self) -> None:
        """Tell the assigner that work or credit may have appeared."""
        self.wakeup.set()

    def held_epoch(self, run_id: UUID) -> int | None:
        """The epoch the region holds a run under, queued or on a worker; None if neither."""
        queued = self.queue.get(str(run_id))
        if queued is not None:
            return queued.epoch
        held = self.registry.holder(run_id)
        return None if held is None else held.epoch

    def held_by(self, worker_id: str, run_id: UUID, epoch: int) -> HeldRun | None:
        """The hold of this worker on this run under this epoch, if any."""
        held = self.registry.holder(run_id)
        if held is None or held.worker_id != worker_id or held.epoch != epoch:
            return None
        return held

    def overrides(self, worker_id: str, run_id: UUID, epoch: int) -> bool:
        """True when the region's own view of a run a worker reports on is newer.

        That is when the region holds the run elsewhere (queued again, or on another worker)
        or took it back from this worker: recording the report would undo the region's own
        later decision. Reports of runs the region does not know at all are recorded (e.g.
        after a region restart); the ledger's epoch guard decides.
        """
        if self.held_epoch(run_id) is not None:
            return self.held_by(worker_id, run_id, epoch) is None
        return self.registry.gave_up(worker_id, run_id, epoch)

    def reclaim(self, worker_id: str, run_id: UUID, epoch: int) -> HeldRun | None:
        """Give a worker back a run taken from it as unstarted that it did start after all.

        A run is taken back unstarted when its worker's stream ends before the region heard of
        its start (the start was in flight, or the region was frozen). When the worker then
        reports it running or finished and it still waits in the queue under that epoch, it is
        the worker's again (recorded ``assigned``; the caller records the rest): sending the
        same attempt out once more would run it twice, or, to the same worker, be ignored as a
        duplicate and leave it ``assigned`` for good.
        """
        queued = self.queue.get(str(run_id))
        worker = self.registry.get(worker_id)
        if queued is None or queued.epoch != epoch or worker is None:
            return None
        if not self.registry.gave_up(worker_id, run_id, epoch):
            return None
        self.queue.remove(str(run_id))
        held = HeldRun(run_id, epoch, worker_id, queued)
        self.registry.hold(worker, held)
        self.writer.record([held.transition(RunState.ASSIGNED, self.now())])
        return held

    def enqueue(self, queued: QueuedRun) -> None:
        """Queue a delegated run (the caller checked credit)."""
        self.queue.push(queued.key, queued.kind, queued.priority, queued, queued.enqueued_at)
        self.wake()

    def requeue(self, queued: QueuedRun, *, wake: bool = True) -> None:
        """Put a run back in the queue with the wait it already had.

        ``wake=False`` for a run the assigner itself puts back (no worker can take it now):
        waking would only spin the assigner until a worker or credit changes.
        """
        queued.compact()
        self.queue.restore(queued.key, queued.kind, queued.priority, queued, queued.enqueued_at)
        if wake:
            self.wake()

    def withdraw(self, held: HeldRun, reason: str) -> None:
        """Take a run off its worker for good and tell the worker to stop it."""
        if self.registry.release(held.run_id) is None:
            return
        self.registry.give_up(held)
        self.board.settle(held.run_id, held.kind, held.worker_id)
        worker = self.registry.get(held.worker_id)
        if worker is not None:
            worker.send(messages.cancel([(held.run_id, held.epoch)], reason))
        self.wake()

    def discard(self, held: HeldRun) -> None:
        """Drop a run the region no longer owns before its worker was told about it."""
        if self.registry.release(held.run_id) is None:
            return
        self.board.settle(held.run_id, held.kind, held.worker_id)
        worker = self.registry.get(held.worker_id)
        if worker is not None:
            worker.free_slots = min(worker.slots, worker.free_slots + 1)
        self.wake()

    def take_back(self, held: HeldRun, reason: str) -> None:
        """Take a run off a worker that is gone: back to the queue, or lost if it had started.

        Runs adopted from a reconnecting worker have no claim to requeue; if they had not
        started they could not have been adopted, so they are always lost here.
        """
        self.registry.release(held.run_id)
        self.registry.give_up(held)
        self.board.settle(held.run_id, held.kind, held.worker_id)
        at = self.now()
        if held.started or held.queued is None:
            error = f"worker {held.worker_id} {reason} while the run was running"
            self.writer.record([held.transition(RunState.LOST, at, error)])
            return
        self.writer.record([held.transition(RunState.DELEGATED, at)])
        self.requeue(held.queued)
