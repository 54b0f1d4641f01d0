"""The worker stream's messages: built from the region's holdings, read into transitions."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from uuid import UUID

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import RunState, Transition
from taskmesh.common.rpc import region_pb2
from taskmesh.common.rpc.values import (
    EXECUTORS,
    RUN_STATES,
    duration,
    instant,
    member,
    timestamp,
    uuid,
)
from taskmesh.region.holdings import HeldRun

RESULT_STATES = frozenset(
    {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED}
)

RunKey = tuple[UUID, int]  # (run id, epoch)


def run_ref(run_id: UUID, epoch: int) -> region_pb2.RunRef:
    """The RunRef of a run under an epoch."""
    return region_pb2.RunRef(run_id=str(run_id), epoch=epoch)


def run_key(ref: region_pb2.RunRef) -> RunKey:
    """The (run id, epoch) of a RunRef; ``ValidationError`` for a malformed id."""
    return uuid(ref.run_id, "run.run_id"), ref.epoch


def assignment(held: HeldRun) -> region_pb2.Assignment:
    """What a worker needs to execute a held run (it must have come through the queue)."""
    if held.queued is None:
        raise ValueError(f"run {held.run_id} was adopted, not assigned: nothing to send")
    claimed = held.queued.claimed
    return region_pb2.Assignment(
        run=run_ref(held.run_id, held.epoch),
        task_id=str(claimed.task_id),
        task_name=claimed.task_name,
        attempt=claimed.attempt,
        executor=EXECUTORS[claimed.executor],
        command=claimed.command,
        args=claimed.args,
        timeout=duration(claimed.timeout),
        labels=claimed.labels,
        kind=claimed.kind,
        due_at=timestamp(claimed.due_at),
    )


def assign(runs: Iterable[HeldRun]) -> region_pb2.RegionMessage:
    """One AssignRuns message for a batch of runs, best first."""
    batch = region_pb2.AssignRuns(assignments=[assignment(held) for held in runs])
    return region_pb2.RegionMessage(assign=batch)


def cancel(runs: Iterable[RunKey], reason: str) -> region_pb2.RegionMessage:
    """A CancelAssignments message."""
    refs = [run_ref(run_id, epoch) for run_id, epoch in runs]
    return region_pb2.RegionMessage(cancel=region_pb2.CancelAssignments(runs=refs, reason=reason))


def ack(runs: Iterable[RunKey]) -> region_pb2.RegionMessage:
    """An AckResults message: these results are in the ledger or refused for good."""
    refs = [run_ref(run_id, epoch) for run_id, epoch in runs]
    return region_pb2.RegionMessage(ack=region_pb2.AckResults(runs=refs))


def drain(reason: str, grace: timedelta) -> region_pb2.RegionMessage:
    """A DrainWorker message."""
    return region_pb2.RegionMessage(
        drain=region_pb2.DrainWorker(reason=reason, grace=duration(grace))
    )


def welcome(
    region: str, interval: timedelta, timeout: timedelta, abandon: Iterable[RunKey]
) -> region_pb2.RegionMessage:
    """The WorkerWelcome answering a registration."""
    return region_pb2.RegionMessage(
        welcome=region_pb2.WorkerWelcome(
            region=region,
            heartbeat_interval=duration(interval),
            heartbeat_timeout=duration(timeout),
            abandon=[run_ref(run_id, epoch) for run_id, epoch in abandon],
        )
    )


def result_state(result: region_pb2.RunResult) -> RunState:
    """The terminal state a result reports; ``ValidationError`` for anything else."""
    state = member(RUN_STATES, result.state, "result.state")
    if state not in RESULT_STATES:
        raise ValidationError("result.state", f"a result cannot report {state}")
    return state


def clean_text(text: str) -> str:
    """Text PostgreSQL can store: NUL characters (from process output) replaced."""
    return text.replace("\x00", "\ufffd")


def result_transition(
    result: region_pb2.RunResult, state: RunState, worker_id: str, now: datetime
) -> Transition:
    """The terminal transition of a result, fenced by the epoch it was assigned under."""
    run_id, epoch = run_key(result.run)
    return Transition(
        run_id,
        epoch,
        state,
        instant(result.finished_at) if result.HasField("finished_at") else now,
        worker_id=worker_id,
        exit_code=result.exit_code if result.HasField("exit_code") else None,
        output_tail=clean_text(result.output_tail),
        error=clean_text(result.error),
    )


def started_at(result: region_pb2.RunResult, fallback: datetime) -> datetime:
    """When the result's process started, else ``fallback``."""
    return instant(result.started_at) if result.HasField("started_at") else fallback
