"""What the region does with a worker's registration, heartbeats, starts, drain and departure.

Fencing on the stream (see ``RegionRuntime.overrides``): a report about a run is recorded when
this worker holds the run under that epoch, or when the region does not know the run at all;
it is dropped when the region's own view is newer.
"""

from __future__ import annotations

import logging
from uuid import UUID

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import RunState
from taskmesh.common.rpc import region_pb2
from taskmesh.common.rpc.values import EXECUTORS, instant, member
from taskmesh.region import messages
from taskmesh.region.holdings import HeldRun
from taskmesh.region.messages import RunKey
from taskmesh.region.result_recorder import ResultRecorder
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_registry import ConnectedWorker

log = logging.getLogger(__name__)


class WorkerSessions:
    """Registration, heartbeats, starts, results, drains and departures of workers."""

    def __init__(self, runtime: RegionRuntime) -> None:
        self._runtime = runtime
        self._registry = runtime.registry
        self._results = ResultRecorder(runtime)

    def register(self, message: region_pb2.RegisterWorker) -> tuple[ConnectedWorker, list[RunKey]]:
        """Track a worker; returns it and the runs it reported that it must abandon."""
        worker = self._new_worker(message)
        reported = [messages.run_key(ref) for ref in message.running]
        previous = self._registry.get(worker.id)
        if previous is not None:
            self._supersede(previous, worker, set(reported))
        self._registry.add(worker)
        abandon = [key for key in reported if not self._keep(worker, *key)]
        self._runtime.wake()
        log.info(
            "worker %s registered: %d slots, %d runs running, %d abandoned",
            worker.id,
            worker.slots,
            len(reported),
            len(abandon),
        )
        return worker, abandon

    def heartbeat(self, worker: ConnectedWorker, message: region_pb2.WorkerHeartbeat) -> None:
        """Refresh a worker's credit."""
        worker.heartbeat_at = self._runtime.now()
        worker.free_slots = max(0, message.free_slots)
        worker.outbox_size = message.outbox_size
        if worker.credit > 0 and len(self._runtime.queue):
            self._runtime.wake()

    def draining(self, worker: ConnectedWorker, message: region_pb2.WorkerDraining) -> None:
        """A worker takes no more runs."""
        log.info("worker %s is draining: %s", worker.id, message.reason)
        self._registry.mark_draining(worker)

    def started(self, worker: ConnectedWorker, message: region_pb2.RunsStarted) -> None:
        """Record the runs whose process started."""
        transitions = []
        for start in message.runs:
            run_id, epoch = messages.run_key(start.run)
            held = self._held_or_reclaimed(worker, run_id, epoch)
            if held is None and self._runtime.overrides(worker.id, run_id, epoch):
                continue
            held = held or self._adopt(worker, run_id, epoch)
            held.started = True
            at = instant(start.started_at) if start.HasField("started_at") else self._runtime.now()
            transitions.append(held.transition(RunState.RUNNING, at))
            if held.queued is not None:
                self._runtime.metrics.observe_started(held.queued.claimed.due_at, at)
        self._runtime.writer.record(transitions)

    def results(self, worker: ConnectedWorker, message: region_pb2.RunResults) -> None:
        """Record results; each is acked once it is in the ledger."""
        self._results.record(worker, message)

    def disconnect(self, worker: ConnectedWorker, reason: str, *, failure: bool) -> None:
        """A worker's stream ended: its unstarted runs go back to the queue, the others are lost."""
        if not self._registry.discard(worker):
            return  # already disconnected, or replaced by a newer stream
        worker.close()
        held = list(worker.held.values())
        for run in held:
            self._runtime.take_back(run, reason)
        if failure:
            self._runtime.board.record_worker_failure(worker.id, reason)
        level = logging.WARNING if failure else logging.INFO
        log.log(level, "worker %s %s; %d runs taken back", worker.id, reason, len(held))

    def _new_worker(self, message: region_pb2.RegisterWorker) -> ConnectedWorker:
        """A ConnectedWorker for a registration; ``ValidationError`` when it is malformed."""
        if not message.worker_id:
            raise ValidationError("register.worker_id", "must not be empty")
        if message.slots <= 0:
            raise ValidationError("register.slots", f"must be positive, got {message.slots}")
        executors = {member(EXECUTORS, value, "register.executors") for value in message.executors}
        now = self._runtime.now()
        return ConnectedWorker(
            id=message.worker_id,
            slots=message.slots,
            labels=dict(message.labels),
            executors=frozenset(executors),
            version=message.version,
            connected_at=now,
            heartbeat_at=now,
            seen_at=self._runtime.clock(),
            free_slots=max(0, message.slots - len(message.running)),
        )

    def _supersede(
        self, previous: ConnectedWorker, worker: ConnectedWorker, reported: set[RunKey]
    ) -> None:
        """A worker reconnected before its old stream was seen to end: carry what still runs."""
        self._registry.discard(previous)
        previous.close()
        self._runtime.board.record_worker_failure(worker.id, "stream replaced by a new one")
        for held in list(previous.held.values()):
            if (held.run_id, held.epoch) in reported:
                del previous.held[held.run_id]
                held.started = True
                worker.held[held.run_id] = held
            else:
                self._runtime.take_back(held, "reconnected without it")

    def _keep(self, worker: ConnectedWorker, run_id: UUID, epoch: int) -> bool:
        """Whether a run the worker reports running stays with it (held, reclaimed or adopted)."""
        held = self._held_or_reclaimed(worker, run_id, epoch)
        if held is not None:
            if not held.started:  # reclaimed: it runs, as the worker says
                held.started = True
                at = self._runtime.now()
                self._runtime.writer.record([held.transition(RunState.RUNNING, at)])
            return True
        if self._runtime.overrides(worker.id, run_id, epoch):
            return False
        self._adopt(worker, run_id, epoch)
        return True

    def _held_or_reclaimed(
        self, worker: ConnectedWorker, run_id: UUID, epoch: int
    ) -> HeldRun | None:
        """The worker's hold on a run it reports started: held, or reclaimed from the queue."""
        held = self._runtime.held_by(worker.id, run_id, epoch)
        return held or self._runtime.reclaim(worker.id, run_id, epoch)

    def _adopt(self, worker: ConnectedWorker, run_id: UUID, epoch: int) -> HeldRun:
        """Hold a run the region did not know this worker runs (the ledger fences its writes)."""
        held = HeldRun(run_id, epoch, worker.id, queued=None, started=True)
        self._registry.hold(worker, held)
        return held
