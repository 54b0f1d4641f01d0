"""Tasks on the wire: schedules, retry policies, specs and stored tasks, both ways.

Unset or zero wire fields decode to the model's defaults, as the ``.proto`` comments promise.
Semantic checks (priority range, cron syntax, known regions) belong to the submission path.
"""

from __future__ import annotations

from datetime import timedelta
from typing import assert_never

from taskmesh.common import model
from taskmesh.common.errors import ValidationError
from taskmesh.common.rpc import runs, scheduler_pb2, task_pb2
from taskmesh.common.rpc.values import (
    EXECUTORS,
    MISFIRE_POLICIES,
    OVERLAP_POLICIES,
    PLACEMENTS,
    RUN_STATES,
    duration,
    instant,
    member,
    timestamp,
    uuid,
    uuids,
)

# The model's defaults, which unset and zero wire fields stand for.
_SPEC_DEFAULTS = model.TaskSpec(name="", command="")
_RETRY_DEFAULTS = model.RetryPolicy()
_CRON_DEFAULTS = model.CronSchedule(expression="")
_INTERVAL_DEFAULTS = model.IntervalSchedule(every=timedelta(0))


def schedule_to_proto(schedule: model.Schedule) -> task_pb2.Schedule:
    """The Schedule message of a model schedule."""
    match schedule:
        case model.AtSchedule():
            return task_pb2.Schedule(at=task_pb2.AtSchedule(at=timestamp(schedule.at)))
        case model.CronSchedule():
            cron = task_pb2.CronSchedule(
                expression=schedule.expression,
                timezone=schedule.timezone,
                misfire=MISFIRE_POLICIES[schedule.misfire],
                overlap=OVERLAP_POLICIES[schedule.overlap],
            )
            return task_pb2.Schedule(cron=cron)
        case model.IntervalSchedule():
            interval = task_pb2.IntervalSchedule(
                every=duration(schedule.every),
                start_at=timestamp(schedule.start_at),
                misfire=MISFIRE_POLICIES[schedule.misfire],
                overlap=OVERLAP_POLICIES[schedule.overlap],
            )
            return task_pb2.Schedule(interval=interval)
        case _:
            assert_never(schedule)


def schedule_from_proto(message: task_pb2.Schedule) -> model.Schedule | None:
    """The model schedule of a Schedule message; None when no kind is set (due at once)."""
    kind = message.WhichOneof("kind")
    if kind == "at":
        if not message.at.HasField("at"):
            raise ValidationError("schedule.at.at", "an at-schedule needs its instant")
        return model.AtSchedule(at=instant(message.at.at))
    if kind == "cron":
        return _cron_from_proto(message.cron)
    if kind == "interval":
        return _interval_from_proto(message.interval)
    return None


def _cron_from_proto(message: task_pb2.CronSchedule) -> model.CronSchedule:
    defaults = _CRON_DEFAULTS
    return model.CronSchedule(
        expression=message.expression,
        timezone=message.timezone or defaults.timezone,
        misfire=member(MISFIRE_POLICIES, message.misfire, "cron.misfire", defaults.misfire),
        overlap=member(OVERLAP_POLICIES, message.overlap, "cron.overlap", defaults.overlap),
    )


def _interval_from_proto(message: task_pb2.IntervalSchedule) -> model.IntervalSchedule:
    defaults = _INTERVAL_DEFAULTS
    return model.IntervalSchedule(
        every=message.every.ToTimedelta(),
        start_at=instant(message.start_at) if message.HasField("start_at") else None,
        misfire=member(MISFIRE_POLICIES, message.misfire, "interval.misfire", defaults.misfire),
        overlap=member(OVERLAP_POLICIES, message.overlap, "interval.overlap", defaults.overlap),
    )


def retry_policy_to_proto(policy: model.RetryPolicy) -> task_pb2.RetryPolicy:
    """The RetryPolicy message of a model retry policy, every field set."""
    return task_pb2.RetryPolicy(
        max_attempts=policy.max_attempts,
        initial_backoff=duration(policy.initial_backoff),
        max_backoff=duration(policy.max_backoff),
        multiplier=policy.multiplier,
        retry_on=sorted(RUN_STATES[state] for state in policy.retry_on),
    )


def retry_policy_from_proto(message: task_pb2.RetryPolicy) -> model.RetryPolicy:
    """The model retry policy of a RetryPolicy message; unset fields take the defaults."""
    defaults, has = _RETRY_DEFAULTS, message.HasField
    return model.RetryPolicy(
        max_attempts=message.max_attempts or defaults.max_attempts,
        initial_backoff=message.initial_backoff.ToTimedelta()
        if has("initial_backoff")
        else defaults.initial_backoff,
        max_backoff=message.max_backoff.ToTimedelta()
        if has("max_backoff")
        else defaults.max_backoff,
        multiplier=message.multiplier or defaults.multiplier,
        retry_on=frozenset(
            member(RUN_STATES, state, "retry.retry_on") for state in message.retry_on
        ),
    )


def task_spec_to_proto(spec: model.TaskSpec) -> task_pb2.TaskSpec:
    """The TaskSpec message of a model task spec."""
    return task_pb2.TaskSpec(
        name=spec.name,
        command=spec.command,
        executor=EXECUTORS[spec.executor],
        args=spec.args,
        description=spec.description,
        schedule=None if spec.schedule is None else schedule_to_proto(spec.schedule),
        priority=spec.priority,
        region=spec.region,
        placement=PLACEMENTS[spec.placement],
        kind=spec.kind,
        timeout=duration(spec.timeout),
        schedule_to_start_timeout=duration(spec.schedule_to_start_timeout),
        retry=retry_policy_to_proto(spec.retry),
        dependencies=[str(task_id) for task_id in spec.dependencies],
        idempotency_key=spec.idempotency_key,
        labels=spec.labels,
    )


def task_spec_from_proto(message: task_pb2.TaskSpec) -> model.TaskSpec:
    """The model task spec of a TaskSpec message; unset fields take the defaults."""
    defaults, has = _SPEC_DEFAULTS, message.HasField
    return model.TaskSpec(
        name=message.name,
        command=message.command,
        executor=member(EXECUTORS, message.executor, "executor", defaults.executor),
        args=tuple(message.args),
        description=message.description,
        schedule=schedule_from_proto(message.schedule),
        priority=message.priority,
        region=message.region if has("region") else None,
        placement=member(PLACEMENTS, message.placement, "placement", defaults.placement),
        kind=message.kind or defaults.kind,
        timeout=message.timeout.ToTimedelta() if has("timeout") else None,
        schedule_to_start_timeout=message.schedule_to_start_timeout.ToTimedelta()
        if has("schedule_to_start_timeout")
        else None,
        retry=retry_policy_from_proto(message.retry),
        dependencies=uuids(message.dependencies, "dependencies"),
        idempotency_key=message.idempotency_key if has("idempotency_key") else None,
        labels=dict(message.labels),
    )


def task_to_proto(task: model.Task) -> task_pb2.Task:
    """The Task message of a stored task."""
    return task_pb2.Task(
        id=str(task.id),
        spec=task_spec_to_proto(task.spec),
        created_at=timestamp(task.created_at),
        workflow_id=None if task.workflow_id is None else str(task.workflow_id),
        paused=task.paused,
    )


def task_from_proto(message: task_pb2.Task) -> model.Task:
    """The stored task of a Task message."""
    has = message.HasField
    return model.Task(
        id=uuid(message.id, "id"),
        spec=task_spec_from_proto(message.spec),
        created_at=instant(message.created_at),
        workflow_id=uuid(message.workflow_id, "workflow_id") if has("workflow_id") else None,
        paused=message.paused,
    )


def task_status_to_proto(status: model.TaskStatus) -> scheduler_pb2.TaskStatus:
    """The TaskStatus message of a task with its latest attempt."""
    latest = status.latest_run
    return scheduler_pb2.TaskStatus(
        task=task_to_proto(status.task),
        latest_run=None if latest is None else runs.run_to_proto(latest),
    )


def task_status_from_proto(message: scheduler_pb2.TaskStatus) -> model.TaskStatus:
    """The task with its latest attempt of a TaskStatus message."""
    latest = runs.run_from_proto(message.latest_run) if message.HasField("latest_run") else None
    return model.TaskStatus(task=task_from_proto(message.task), latest_run=latest)


def scheduled_task_to_proto(item: model.ScheduledTask) -> scheduler_pb2.ScheduledTask:
    """The ScheduledTask message of a recurring task and its fire times."""
    return scheduler_pb2.ScheduledTask(
        task=task_to_proto(item.task),
        last_fire=timestamp(item.last_fire),
        next_fires=[timestamp(fire) for fire in item.next_fires],
    )


def scheduled_task_from_proto(message: scheduler_pb2.ScheduledTask) -> model.ScheduledTask:
    """The recurring task and its fire times of a ScheduledTask message."""
    last = instant(message.last_fire) if message.HasField("last_fire") else None
    return model.ScheduledTask(
        task=task_from_proto(message.task),
        last_fire=last,
        next_fires=tuple(instant(fire) for fire in message.next_fires),
    )
