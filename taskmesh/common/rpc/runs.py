"""Runs on the wire: run attempts, claimed runs and event-log entries, both ways."""

from __future__ import annotations

from taskmesh.common import model
from taskmesh.common.rpc import region_pb2, run_pb2
from taskmesh.common.rpc.values import (
    EXECUTORS,
    PLACEMENTS,
    RUN_STATES,
    details,
    duration,
    instant,
    member,
    struct,
    timestamp,
    uuid,
)


def run_to_proto(run: model.Run) -> run_pb2.Run:
    """The Run message of a run attempt."""
    return run_pb2.Run(
        id=str(run.id),
        task_id=str(run.task_id),
        attempt=run.attempt,
        state=RUN_STATES[run.state],
        epoch=run.epoch,
        priority=run.priority,
        due_at=timestamp(run.due_at),
        created_at=timestamp(run.created_at),
        region=run.region,
        worker_id=run.worker_id,
        delegated_at=timestamp(run.delegated_at),
        assigned_at=timestamp(run.assigned_at),
        started_at=timestamp(run.started_at),
        finished_at=timestamp(run.finished_at),
        exit_code=run.exit_code,
        output_tail=run.output_tail,
        error=run.error,
        ready_at=timestamp(run.ready_at),
    )


def run_from_proto(message: run_pb2.Run) -> model.Run:
    """The run attempt of a Run message."""
    has = message.HasField
    return model.Run(
        id=uuid(message.id, "id"),
        task_id=uuid(message.task_id, "task_id"),
        attempt=message.attempt,
        state=member(RUN_STATES, message.state, "state"),
        epoch=message.epoch,
        priority=message.priority,
        due_at=instant(message.due_at),
        created_at=instant(message.created_at),
        region=message.region if has("region") else None,
        worker_id=message.worker_id if has("worker_id") else None,
        delegated_at=instant(message.delegated_at) if has("delegated_at") else None,
        assigned_at=instant(message.assigned_at) if has("assigned_at") else None,
        started_at=instant(message.started_at) if has("started_at") else None,
        finished_at=instant(message.finished_at) if has("finished_at") else None,
        exit_code=message.exit_code if has("exit_code") else None,
        output_tail=message.output_tail,
        error=message.error,
        ready_at=instant(message.ready_at) if has("ready_at") else None,
    )


def claimed_run_to_proto(run: model.ClaimedRun) -> region_pb2.ClaimedRun:
    """The ClaimedRun message of a run the master delegates."""
    return region_pb2.ClaimedRun(
        run_id=str(run.run_id),
        task_id=str(run.task_id),
        task_name=run.task_name,
        attempt=run.attempt,
        epoch=run.epoch,
        priority=run.priority,
        region=run.region,
        due_at=timestamp(run.due_at),
        delegated_at=timestamp(run.delegated_at),
        command=run.command,
        executor=EXECUTORS[run.executor],
        args=run.args,
        kind=run.kind,
        placement=PLACEMENTS[run.placement],
        timeout=duration(run.timeout),
        schedule_to_start_timeout=duration(run.schedule_to_start_timeout),
        labels=run.labels,
    )


def claimed_run_from_proto(message: region_pb2.ClaimedRun) -> model.ClaimedRun:
    """The delegated run of a ClaimedRun message (as a region receives it)."""
    has = message.HasField
    return model.ClaimedRun(
        run_id=uuid(message.run_id, "run_id"),
        task_id=uuid(message.task_id, "task_id"),
        task_name=message.task_name,
        attempt=message.attempt,
        epoch=message.epoch,
        priority=message.priority,
        region=message.region,
        due_at=instant(message.due_at),
        delegated_at=instant(message.delegated_at),
        command=message.command,
        executor=member(EXECUTORS, message.executor, "executor", model.Executor.SHELL),
        args=tuple(message.args),
        kind=message.kind or model.DEFAULT_KIND,
        placement=member(PLACEMENTS, message.placement, "placement", model.Placement.STRICT),
        timeout=message.timeout.ToTimedelta() if has("timeout") else None,
        schedule_to_start_timeout=message.schedule_to_start_timeout.ToTimedelta()
        if has("schedule_to_start_timeout")
        else None,
        labels=dict(message.labels),
    )


def run_event_to_proto(event: model.RunEvent) -> run_pb2.RunEvent:
    """The RunEvent message of an event-log entry."""
    return run_pb2.RunEvent(
        id=event.id,
        at=timestamp(event.at),
        run_id=str(event.run_id),
        task_id=str(event.task_id),
        attempt=event.attempt,
        from_state=run_pb2.RUN_STATE_UNSPECIFIED
        if event.from_state is None
        else RUN_STATES[event.from_state],
        to_state=RUN_STATES[event.to_state],
        epoch=event.epoch,
        region=event.region,
        worker_id=event.worker_id,
        detail=struct(event.detail),
    )


def run_event_from_proto(message: run_pb2.RunEvent) -> model.RunEvent:
    """The event-log entry of a RunEvent message."""
    has = message.HasField
    from_state = message.from_state
    return model.RunEvent(
        id=message.id,
        at=instant(message.at),
        run_id=uuid(message.run_id, "run_id"),
        task_id=uuid(message.task_id, "task_id"),
        attempt=message.attempt,
        from_state=None if from_state == 0 else member(RUN_STATES, from_state, "from_state"),
        to_state=member(RUN_STATES, message.to_state, "to_state"),
        epoch=message.epoch,
        region=message.region if has("region") else None,
        worker_id=message.worker_id if has("worker_id") else None,
        detail=details(message.detail),
    )
