"""Results from workers: into the ledger through the writer, then acked on the worker's stream.

A result is acked only once the ledger took it or refused it for good (stale epoch, already
recorded, illegal), never before: until then the worker keeps it in its outbox. A run a worker
gave back without starting it (a FAILED result with no ``started_at``: no free slot, draining)
did not execute; it goes back to the queue, up to ``MAX_BOUNCES`` times, after which the
failure is recorded so a run no worker will start cannot circulate forever. The worker gets no
more runs until its next heartbeat advertises free slots. A result (or start) of a run taken
back as unstarted that the worker did run returns the run to it (``RegionRuntime.reclaim``).
A run the worker's executor policy refused (``refused_by_policy``) is recorded failed at once:
the pool shares one policy, so no other worker would run it either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from taskmesh.common.daemon_logging import run_fields
from taskmesh.common.errors import ValidationError
from taskmesh.common.model import RunState, Transition, TransitionOutcome, TransitionRefusal
from taskmesh.common.rpc import region_pb2
from taskmesh.region import messages
from taskmesh.region.holdings import HeldRun
from taskmesh.region.messages import RunKey
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_registry import ConnectedWorker

log = logging.getLogger(__name__)

NEEDS_RUNNING = frozenset({RunState.SUCCEEDED, RunState.FAILED})  # legal from running only
MAX_BOUNCES = 3


class ResultRecorder:
    """Turns result batches into ledger tickets whose commit sends the ack."""

    def __init__(self, runtime: RegionRuntime) -> None:
        self._runtime = runtime

    def record(self, worker: ConnectedWorker, message: region_pb2.RunResults) -> None:
        """Record a batch of results; ack them together once written."""
        transitions: list[Transition] = []
        acks: list[RunKey] = []
        for result in message.results:
            try:
                transitions += self._transitions(worker, result)
            except ValidationError as error:
                log.warning("worker %s sent a malformed result, ignored: %s", worker.id, error)
                continue
            acks.append(messages.run_key(result.run))
        self._runtime.writer.record(transitions, lambda done: self._ack(worker.id, acks, done))
        self._runtime.wake()

    def _transitions(
        self, worker: ConnectedWorker, result: region_pb2.RunResult
    ) -> list[Transition]:
        """The transitions that record one result (none when the region overrides it)."""
        state = messages.result_state(result)
        run_id, epoch = messages.run_key(result.run)
        held = self._runtime.held_by(worker.id, run_id, epoch)
        if held is None and result.HasField("started_at"):  # it ran: not to be run again
            held = self._runtime.reclaim(worker.id, run_id, epoch)
        if held is None and self._runtime.overrides(worker.id, run_id, epoch):
            return []
        executed = result.HasField("started_at") or (held is not None and held.started)
        bounces = not result.refused_by_policy
        if held is not None and bounces and self._bounce(worker, held, state, executed):
            return []
        if held is not None:
            self._release(worker, held, state, executed)
        now = self._runtime.now()
        terminal = messages.result_transition(result, state, worker.id, now)
        if state not in NEEDS_RUNNING or (held is not None and held.started):
            return [terminal]
        # The start may not be recorded (lost with a stream, or the run never started): record
        # it first; the ledger refuses it as a duplicate if it was.
        at = messages.started_at(result, terminal.at)
        return [Transition(run_id, epoch, RunState.RUNNING, at, worker_id=worker.id), terminal]

    def _bounce(
        self, worker: ConnectedWorker, held: HeldRun, state: RunState, executed: bool
    ) -> bool:
        """Requeue a run the worker gave back unstarted, if it has bounces left."""
        queued = held.queued
        if state is not RunState.FAILED or executed or queued is None:
            return False
        if queued.bounces >= MAX_BOUNCES:
            return False
        queued.bounces += 1
        # It had no room, or is leaving: nothing more for it (not even this run again, under
        # the same epoch) until a heartbeat advertises free slots; another worker may take it.
        worker.free_slots = 0
        if not worker.draining:
            self._runtime.board.record_worker_failure(worker.id, "gave back a run unstarted")
        self._runtime.take_back(held, "gave it back unstarted")
        return True

    def _release(
        self, worker: ConnectedWorker, held: HeldRun, state: RunState, executed: bool
    ) -> None:
        """Free the run's slot and count its outcome on the breakers."""
        self._runtime.registry.release(held.run_id)
        worker.free_slots = min(worker.slots, worker.free_slots + 1)
        kind = held.kind if executed else None
        self._runtime.board.record_result(held.run_id, kind, worker.id, state)
        if kind is None and held.kind is not None:
            self._runtime.board.kind(held.kind).settle(held.run_id)

    def _ack(
        self, worker_id: str, acks: Sequence[RunKey], outcomes: list[TransitionOutcome]
    ) -> None:
        """Ack results now in the ledger (or refused for good) on the worker's current stream."""
        for outcome in outcomes:
            if not outcome.applied and outcome.refusal is not TransitionRefusal.DUPLICATE:
                transition = outcome.transition
                log.info(
                    "the ledger refused %s of run %s (epoch %d): %s",
                    transition.target,
                    transition.run_id,
                    transition.epoch,
                    outcome.refusal,
                    extra=run_fields(transition.run_id, worker=worker_id, epoch=transition.epoch),
                )
        worker = self._runtime.registry.get(worker_id)
        if worker is not None and acks:
            worker.send(messages.ack(acks))
