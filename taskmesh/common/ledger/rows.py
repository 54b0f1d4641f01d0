"""Mapping between ledger rows and the frozen model objects: the ledger's only boundary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from uuid import UUID

from taskmesh.common.model import (
    AtSchedule,
    ClaimedRun,
    CronSchedule,
    Executor,
    IntervalSchedule,
    MisfirePolicy,
    OverlapPolicy,
    Placement,
    Region,
    RegionState,
    RetryPolicy,
    Run,
    RunEvent,
    RunState,
    Schedule,
    Task,
    TaskSpec,
    Worker,
    WorkerState,
)

Row = Mapping[Any, Any]


def as_uuid(value: Any) -> UUID:
    """A plain ``uuid.UUID`` (asyncpg returns its own subclass)."""
    return value if type(value) is UUID else UUID(bytes=value.bytes)


def optional_uuid(value: Any) -> UUID | None:
    """``as_uuid`` that lets None through."""
    return None if value is None else as_uuid(value)


def as_json(value: Mapping[str, object]) -> str:
    """A mapping as a JSON document for a ``jsonb`` parameter."""
    return json.dumps(dict(value), sort_keys=True, default=str)


def schedule_values(schedule: Schedule | None) -> dict[str, Any]:
    """The ``tasks`` columns that hold a schedule."""
    match schedule:
        case None:
            return {"schedule_kind": None}
        case AtSchedule(at=at):
            return {"schedule_kind": "at", "schedule_at": at}
        case CronSchedule(expression=expression, timezone=zone, misfire=misfire, overlap=overlap):
            return {
                "schedule_kind": "cron",
                "cron_expression": expression,
                "cron_timezone": zone,
                "misfire": str(misfire),
                "overlap": str(overlap),
            }
        case IntervalSchedule(every=every, start_at=start_at, misfire=misfire, overlap=overlap):
            return {
                "schedule_kind": "interval",
                "interval_every": every,
                "interval_start_at": start_at,
                "misfire": str(misfire),
                "overlap": str(overlap),
            }
    raise TypeError(f"unknown schedule {schedule!r}")


# Every column ``schedule_values`` may set: rows inserted together must all name the same ones.
SCHEDULE_COLUMNS = (
    "schedule_kind",
    "schedule_at",
    "cron_expression",
    "cron_timezone",
    "interval_every",
    "interval_start_at",
    "misfire",
    "overlap",
)


def task_values(spec: TaskSpec) -> dict[str, Any]:
    """The ``tasks`` row of a spec (without id, created_at and workflow)."""
    retry = spec.retry
    return {
        "name": spec.name,
        "description": spec.description,
        "command": spec.command,
        "executor": str(spec.executor),
        "args": list(spec.args),
        **schedule_values(spec.schedule),
        "priority": spec.priority,
        "region": spec.region,
        "placement": str(spec.placement),
        "kind": spec.kind,
        "timeout": spec.timeout,
        "schedule_to_start_timeout": spec.schedule_to_start_timeout,
        "retry_max_attempts": retry.max_attempts,
        "retry_initial_backoff": retry.initial_backoff,
        "retry_max_backoff": retry.max_backoff,
        "retry_multiplier": retry.multiplier,
        "retry_on": sorted(str(state) for state in retry.retry_on),
        "idempotency_key": spec.idempotency_key,
        "labels": dict(spec.labels),
    }


def schedule_from_row(row: Row) -> Schedule | None:
    """The schedule held by a ``tasks`` row."""
    kind = row["schedule_kind"]
    if kind is None:
        return None
    if kind == "at":
        return AtSchedule(at=row["schedule_at"])
    misfire, overlap = MisfirePolicy(row["misfire"]), OverlapPolicy(row["overlap"])
    if kind == "cron":
        return CronSchedule(row["cron_expression"], row["cron_timezone"], misfire, overlap)
    return IntervalSchedule(row["interval_every"], row["interval_start_at"], misfire, overlap)


def retry_from_row(row: Row) -> RetryPolicy:
    """The retry policy held by a ``tasks`` row."""
    return RetryPolicy(
        max_attempts=row["retry_max_attempts"],
        initial_backoff=row["retry_initial_backoff"],
        max_backoff=row["retry_max_backoff"],
        multiplier=row["retry_multiplier"],
        retry_on=frozenset(RunState(state) for state in row["retry_on"]),
    )


def spec_from_row(row: Row) -> TaskSpec:
    """The spec held by a ``tasks`` row with its ``dependencies`` array."""
    return TaskSpec(
        name=row["name"],
        command=row["command"],
        executor=Executor(row["executor"]),
        args=tuple(row["args"]),
        description=row["description"],
        schedule=schedule_from_row(row),
        priority=row["priority"],
        region=row["region"],
        placement=Placement(row["placement"]),
        kind=row["kind"],
        timeout=row["timeout"],
        schedule_to_start_timeout=row["schedule_to_start_timeout"],
        retry=retry_from_row(row),
        dependencies=tuple(as_uuid(task_id) for task_id in row["dependencies"]),
        idempotency_key=row["idempotency_key"],
        labels=dict(row["labels"]),
    )


def task_from_row(row: Row) -> Task:
    """A ``Task`` from a ``tasks`` row with its ``dependencies`` array."""
    return Task(
        id=as_uuid(row["id"]),
        spec=spec_from_row(row),
        created_at=row["created_at"],
        workflow_id=optional_uuid(row["workflow_id"]),
        paused=row["paused"],
    )


def run_from_row(row: Row) -> Run:
    """A ``Run`` from a ``runs`` row."""
    return Run(
        id=as_uuid(row["id"]),
        task_id=as_uuid(row["task_id"]),
        attempt=row["attempt"],
        state=RunState(row["state"]),
        epoch=row["epoch"],
        priority=row["priority"],
        due_at=row["due_at"],
        created_at=row["created_at"],
        region=row["region"],
        worker_id=row["worker_id"],
        delegated_at=row["delegated_at"],
        assigned_at=row["assigned_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        exit_code=row["exit_code"],
        output_tail=row["output_tail"],
        error=row["error"],
        ready_at=row["ready_at"],
    )


def claimed_from_row(row: Row) -> ClaimedRun:
    """A ``ClaimedRun`` from a claimed ``runs`` row joined with its task."""
    timeout: timedelta | None = row["timeout"]
    return ClaimedRun(
        run_id=as_uuid(row["id"]),
        task_id=as_uuid(row["task_id"]),
        task_name=row["task_name"],
        attempt=row["attempt"],
        epoch=row["epoch"],
        priority=row["priority"],
        region=row["region"],
        due_at=row["due_at"],
        delegated_at=row["delegated_at"],
        command=row["command"],
        executor=Executor(row["executor"]),
        args=tuple(row["args"]),
        kind=row["kind"],
        placement=Placement(row["placement"]),
        timeout=timeout,
        schedule_to_start_timeout=row["schedule_to_start_timeout"],
        labels=dict(row["labels"]),
    )


def event_from_row(row: Row) -> RunEvent:
    """A ``RunEvent`` from a ``run_events`` row."""
    from_state = row["from_state"]
    return RunEvent(
        id=row["id"],
        at=row["at"],
        run_id=as_uuid(row["run_id"]),
        task_id=as_uuid(row["task_id"]),
        attempt=row["attempt"],
        from_state=None if from_state is None else RunState(from_state),
        to_state=RunState(row["to_state"]),
        epoch=row["epoch"],
        region=row["region"],
        worker_id=row["worker_id"],
        detail=dict(row["detail"]),
    )


def region_from_row(row: Row) -> Region:
    """A ``Region`` from a ``regions`` row."""
    return Region(
        name=row["name"],
        address=row["address"],
        credit=row["credit"],
        heartbeat_at=row["heartbeat_at"],
        state=RegionState(row["state"]),
    )


def worker_from_row(row: Row) -> Worker:
    """A ``Worker`` from a ``workers`` row."""
    return Worker(
        id=row["id"],
        region=row["region"],
        slots=row["slots"],
        heartbeat_at=row["heartbeat_at"],
        labels=dict(row["labels"]),
        state=WorkerState(row["state"]),
    )
