"""The worker's side of the ``WorkerLink`` protocol: acts on the region's messages.

``Foreman`` is the link's ``RegionHandler``: it says who the worker is (``register``) and how it
is doing (``heartbeat``), starts assignments in free slots, stops cancelled and abandoned runs,
and drops acknowledged results from the outbox. Rules the region can rely on:

* An assignment never waits: it starts at once in a free slot, or ends at once with a FAILED
  result with no ``started_at`` (no free slot, draining, or undecodable) — never dropped. One
  the pool's executor policy refuses is marked ``refused_by_policy`` so it is not requeued.
* An assignment for an attempt already held (running, or its result unacked) is ignored; one
  under an older epoch than an attempt held here is ignored (fencing); one under a newer epoch
  stops the older attempt without a result, then starts like any other.
* A cancel stops the named attempt (or an older epoch of it), which reports CANCELLED; a cancel
  for a run not running here is ignored (a result already in the outbox still goes out).
* ``welcome.abandon`` stops those runs without any result; ``drain`` stops the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from taskmesh.common.daemon_logging import run_fields
from taskmesh.common.errors import ValidationError
from taskmesh.common.model import RunState
from taskmesh.common.rpc import region_pb2
from taskmesh.worker.messages import (
    Assignment,
    Result,
    RunKey,
    decode_assignment,
    heartbeat_message,
    register_message,
)
from taskmesh.worker.outbox import Outbox
from taskmesh.worker.settings import WorkerSettings
from taskmesh.worker.slots import SlotPool, Stop, StopKind

logger = logging.getLogger(__name__)

DrainRequest = Callable[[str, timedelta | None], None]


class Foreman:
    """Turns the region's messages into slot and outbox actions, and reports the worker."""

    def __init__(
        self,
        settings: WorkerSettings,
        slots: SlotPool,
        outbox: Outbox,
        *,
        wake: Callable[[], None],
        drain: DrainRequest,
    ) -> None:
        self._settings = settings
        self._slots = slots
        self._outbox = outbox
        self._wake = wake
        self._drain = drain
        self.draining = False
        self.last_result: Result | None = None

    def registration(self) -> region_pb2.WorkerMessage:
        """``register``: identity, capacity, executors, and the runs still running here."""
        settings = self._settings
        return register_message(
            settings.worker_id,
            settings.slots,
            settings.labels,
            settings.executors,
            self._slots.running,
        )

    def heartbeat(self) -> region_pb2.WorkerMessage:
        """``heartbeat``: free slots as credit (none while draining), runs, outbox size."""
        free = 0 if self.draining else self._slots.free
        return heartbeat_message(free, self._slots.running, len(self._outbox))

    def handle(self, message: region_pb2.RegionMessage) -> None:
        """Act on one region message."""
        kind = message.WhichOneof("body")
        if kind == "welcome":
            self._abandon(message.welcome.abandon)
        elif kind == "assign":
            self._assign(message.assign.assignments)
        elif kind == "cancel":
            self._cancel(message.cancel.runs, message.cancel.reason)
        elif kind == "ack":
            self._ack(message.ack.runs)
        elif kind == "drain":
            drain = message.drain
            grace = drain.grace.ToTimedelta() if drain.HasField("grace") else None
            self._drain(drain.reason, grace)
        else:
            logger.warning("ignoring a region message of unknown kind %r", kind)

    def record(self, result: Result | None) -> None:
        """Keep a finished run's result in the outbox and have it sent (None: nothing to send)."""
        if result is None:
            return
        self._outbox.add(result)
        self.last_result = result
        self._wake()

    def last_outcome(self) -> dict[str, object] | None:
        """The most recent result, for ``/readyz``."""
        result = self.last_result
        if result is None:
            return None
        return {
            "run_id": result.key.run_id,
            "epoch": result.key.epoch,
            "task_id": result.task_id,
            "state": result.state.value,
            "exit_code": result.exit_code,
            "error": result.error,
            "finished_at": result.finished_at.isoformat(),
        }

    def _abandon(self, refs: Iterable[region_pb2.RunRef]) -> None:
        """Stop the runs the region no longer expects, reporting nothing for them."""
        stop = Stop(StopKind.ABANDON, "the region no longer expects this run")
        for ref in refs:
            if not self._slots.stop(RunKey.of(ref), stop):
                key = RunKey.of(ref)
                logger.info(
                    "run %s: abandoned by the region, not running here",
                    key,
                    extra=run_fields(key.run_id, epoch=key.epoch),
                )

    def _assign(self, messages: Iterable[region_pb2.Assignment]) -> None:
        """Start each assignment in a free slot, or fail it at once."""
        batch = list(messages)
        free = self._slots.free
        for message in batch:
            self._accept(message, len(batch), free)

    def _accept(self, message: region_pb2.Assignment, batch: int, free: int) -> None:
        """Start one assignment, ignore it as a duplicate or stale, or refuse it."""
        key = RunKey.of(message.run)
        try:
            assignment = decode_assignment(message)
        except ValidationError as error:
            self._refuse(key, message.task_id, f"invalid assignment: {error}")
            return
        if not self._supersede(assignment):
            return
        refusal = self._settings.policy.refusal(assignment.execution)
        if refusal is not None:
            self._refuse(key, assignment.task_id, refusal, by_policy=True)
        elif self.draining:
            self._refuse(key, assignment.task_id, f"worker {self._settings.worker_id} is draining")
        elif self._slots.free < 1:
            self._refuse(key, assignment.task_id, self._no_slot(batch, free))
        else:
            # Debug only: it starts at once, and its "started" line follows at info.
            logger.debug("%s: assigned", assignment)
            self._slots.start(assignment)

    def _supersede(self, assignment: Assignment) -> bool:
        """False for a duplicate or stale assignment; stops older attempts of a newer one."""
        key = assignment.key
        if key in self._outbox or any(held.epoch >= key.epoch for held in self._held(key)):
            logger.warning("%s: already held at this or a newer epoch; ignored", assignment)
            return False
        superseded = Stop(StopKind.ABANDON, f"superseded by epoch {key.epoch}")
        self._slots.stop(RunKey(key.run_id, key.epoch - 1), superseded)
        return True

    def _held(self, key: RunKey) -> tuple[RunKey, ...]:
        """The attempts of ``key``'s run running here."""
        return self._slots.held(key.run_id)

    def _no_slot(self, batch: int, free: int) -> str:
        """The error of an assignment beyond the worker's credit."""
        return (
            f"worker {self._settings.worker_id} has no free slot: the region assigned a batch "
            f"of {batch} runs with {free} of {self._slots.total} slots free"
        )

    def _refuse(self, key: RunKey, task_id: str, why: str, *, by_policy: bool = False) -> None:
        """End an assignment that never started with a FAILED result."""
        error = f"not started: {why}"
        fields = run_fields(key.run_id, task_id, epoch=key.epoch)
        logger.warning("run %s of task %s: %s", key, task_id, error, extra=fields)
        now = datetime.now(UTC)
        self.record(
            Result(key, task_id, RunState.FAILED, now, error=error, refused_by_policy=by_policy)
        )

    def _cancel(self, refs: Iterable[region_pb2.RunRef], reason: str) -> None:
        """Stop the named runs; each reports CANCELLED with ``reason`` as its error."""
        stop = Stop(StopKind.CANCEL, f"cancelled: {reason}" if reason else "cancelled")
        for ref in refs:
            key = RunKey.of(ref)
            if self._slots.stop(key, stop):
                continue
            fields = run_fields(key.run_id, epoch=key.epoch)
            if key in self._outbox:
                logger.info(
                    "run %s: cancel after it finished; its result stands", key, extra=fields
                )
            else:
                logger.info("run %s: cancel for a run not running here; ignored", key, extra=fields)

    def _ack(self, refs: Iterable[region_pb2.RunRef]) -> None:
        """Forget the acknowledged results."""
        keys = [RunKey.of(ref) for ref in refs]
        dropped = self._outbox.ack(keys)
        logger.debug("region acked %d results (%d held here)", len(keys), len(dropped))
