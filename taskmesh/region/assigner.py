"""The assignment loop: best queued run to the least loaded worker, in batches per worker.

It sleeps on an event set whenever work or credit appears (a delegation, a heartbeat with
free slots, a result, a new worker), and otherwise only until an open kind breaker becomes due
for a trial. Each round pops runs while some worker has credit, skipping kinds whose breaker is
open; a run no worker can take right now (no worker with its executor has credit) is put back
with the wait it already had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from datetime import datetime

from taskmesh.common.daemon_logging import run_fields
from taskmesh.common.model import (
    NOT_STARTED_IN_TIME,
    ClaimedRun,
    RunState,
    Transition,
    TransitionOutcome,
    TransitionRefusal,
)
from taskmesh.region import messages
from taskmesh.region.holdings import HeldRun, QueuedRun
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_registry import ConnectedWorker

log = logging.getLogger(__name__)


class Assigner:
    """Moves runs from the queue to workers whenever both are there."""

    def __init__(self, runtime: RegionRuntime) -> None:
        self._runtime = runtime
        self._stopping = False

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stopping = True
        self._runtime.wake()

    async def run(self) -> None:
        """Assign in rounds until stopped."""
        wakeup = self._runtime.wakeup
        while not self._stopping:
            trial_due = self._runtime.board.seconds_to_next_trial()
            with contextlib.suppress(TimeoutError):  # then a kind breaker is due for a trial
                await asyncio.wait_for(wakeup.wait(), trial_due)
            wakeup.clear()
            if not self._stopping and not self._runtime.draining:
                self.assign_round()

    def assign_round(self) -> int:
        """Assign what can be assigned now; returns how many runs were assigned."""
        batches: dict[ConnectedWorker, list[HeldRun]] = defaultdict(list)
        put_back: list[QueuedRun] = []
        registry, queue, board = self._runtime.registry, self._runtime.queue, self._runtime.board
        now = self._runtime.now()
        while registry.has_credit() and (queued := queue.pop(board.kind_allows)) is not None:
            if _missed_start(queued.claimed, now):
                self._time_out(queued, now)
                continue
            worker = registry.pick(queued.claimed.executor)
            if worker is None:
                put_back.append(queued)
                continue
            held = HeldRun(queued.claimed.run_id, queued.epoch, worker.id, queued)
            registry.hold(worker, held)
            worker.free_slots -= 1
            board.begin(held.run_id, held.kind, worker.id)
            batches[worker].append(held)
        for queued in put_back:
            self._runtime.requeue(queued, wake=False)
        self._send(batches, now)
        return sum(len(runs) for runs in batches.values())

    def _send(self, batches: dict[ConnectedWorker, list[HeldRun]], at: datetime) -> None:
        """Record every ``assigned``, then send each worker its runs the ledger let through.

        The write comes first (fencing): a region that lost a run while it was frozen or cut
        off (reaped, re-delegated under a newer epoch) learns it from the refusal and drops
        the run before any worker could start it a second time.
        """
        held = [run for runs in batches.values() for run in runs]
        transitions = [run.transition(RunState.ASSIGNED, at) for run in held]
        if transitions:  # urgent: the runs' slots are taken until the write is committed
            self._runtime.writer.record(
                transitions, lambda done: self._dispatch(held, done), urgent=True
            )

    def _dispatch(self, held: list[HeldRun], outcomes: list[TransitionOutcome]) -> None:
        """Send the assignments the ledger applied; drop the runs it refused."""
        batches: dict[ConnectedWorker, list[HeldRun]] = defaultdict(list)
        registry = self._runtime.registry
        for run, outcome in zip(held, outcomes, strict=True):
            if registry.holder(run.run_id) is not run:
                continue  # taken back meanwhile (its worker left, or it was cancelled)
            if outcome.applied or outcome.refusal is TransitionRefusal.DUPLICATE:
                worker = registry.get(run.worker_id)
                if worker is not None:
                    batches[worker].append(run)
                continue
            log.warning(
                "run %s dropped, the ledger refused it: %s",
                run.run_id,
                outcome.refusal,
                extra=run_fields(run.run_id, worker=run.worker_id, epoch=run.epoch),
            )
            self._runtime.discard(run)
        for worker, runs in batches.items():
            worker.send(messages.assign(runs))

    def _time_out(self, queued: QueuedRun, at: datetime) -> None:
        """Record a run that waited past its schedule-to-start bound as timed out."""
        claimed = queued.claimed
        self._runtime.writer.record(
            [
                Transition(
                    claimed.run_id, claimed.epoch, RunState.TIMED_OUT, at, error=NOT_STARTED_IN_TIME
                )
            ]
        )


def _missed_start(claimed: ClaimedRun, now: datetime) -> bool:
    """True when the run can no longer start within its schedule-to-start bound."""
    bound = claimed.schedule_to_start_timeout
    return bound is not None and now > claimed.due_at + bound
