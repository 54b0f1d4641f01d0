"""Semantic checks of a submitted task, before anything is written.

The wire converters already turned malformed ids and enum values into ``ValidationError``; here
the values themselves are judged against the model's ranges and the topology. Each check names
the offending field (as a path into ``TaskSpec``) and says what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import timedelta
from typing import assert_never
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import (
    PRIORITY_MAX,
    PRIORITY_MIN,
    AtSchedule,
    CronSchedule,
    Executor,
    IntervalSchedule,
    Placement,
    RetryPolicy,
    RunState,
    Schedule,
    TaskSpec,
)
from taskmesh.common.topology import Topology

MAX_NAME = 256
MAX_COMMAND = 65_536
MAX_DESCRIPTION = 8_192
MAX_KIND = 128
MAX_IDEMPOTENCY_KEY = 256
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1_024
MAX_ARGS = 1_024
MAX_ARGS_CHARACTERS = 65_536  # all arguments together, like the command
MAX_DEPENDENCIES = 1_000
MAX_ATTEMPTS = 100
RETRYABLE_STATES = frozenset({RunState.FAILED, RunState.TIMED_OUT, RunState.LOST})


def validated_spec(spec: TaskSpec, topology: Topology) -> TaskSpec:
    """``spec`` with defaults filled in (the name), or a ``ValidationError`` naming the field."""
    spec = replace(spec, name=spec.name or default_name(spec.command))
    _check_text(spec)
    _check_execution(spec)
    _check_placement(spec, topology)
    if spec.schedule is not None:
        check_schedule(spec.schedule)
    _check_positive(spec.timeout, "timeout")
    _check_positive(spec.schedule_to_start_timeout, "schedule_to_start_timeout")
    _check_retry(spec.retry)
    _check_labels(spec.labels)
    check_dependency_count(len(spec.dependencies), "dependencies")
    return spec


def check_dependency_count(count: int, field: str) -> None:
    """At most ``MAX_DEPENDENCIES`` dependencies on one task."""
    if count > MAX_DEPENDENCIES:
        raise ValidationError(
            field, f"at most {MAX_DEPENDENCIES} dependencies per task, got {count}"
        )


def default_name(command: str) -> str:
    """A task name taken from the command's first word, as the Python client does."""
    words = command.split(maxsplit=1)
    return words[0][:MAX_NAME] if words else ""


def check_priority(priority: int, field: str = "priority") -> int:
    """``priority`` when it is within the model's range."""
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValidationError(
            field, f"must be between {PRIORITY_MIN} and {PRIORITY_MAX}, got {priority}"
        )
    return priority


def check_region(region: str, topology: Topology, field: str = "region") -> str:
    """``region`` when the topology has a region of that name."""
    if region not in topology.region_names:
        known = ", ".join(topology.region_names)
        raise ValidationError(field, f'unknown region "{region}"; the topology has: {known}')
    return region


def check_schedule(schedule: Schedule) -> None:
    """A cron expression croniter accepts in an IANA zone, or a positive interval."""
    match schedule:
        case AtSchedule():
            if schedule.at.tzinfo is None:
                raise ValidationError("schedule.at.at", "needs a time zone offset (e.g. Z)")
        case CronSchedule():
            if not bool(croniter.is_valid(schedule.expression, strict=True)):
                raise ValidationError(
                    "schedule.cron.expression",
                    f'"{schedule.expression}" is not a valid cron expression (e.g. "*/5 * * * *")',
                )
            _check_time_zone(schedule.timezone, "schedule.cron.timezone")
        case IntervalSchedule():
            if schedule.every <= timedelta(0):
                raise ValidationError("schedule.interval.every", "must be positive")
        case _:
            assert_never(schedule)


def _check_time_zone(name: str, field: str) -> None:
    """An IANA time zone name zoneinfo knows."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            field, f'"{name}" is not an IANA time zone name (e.g. "Europe/Paris", "UTC")'
        ) from None


def _check_length(value: str, limit: int, field: str) -> None:
    """At most ``limit`` characters."""
    if len(value) > limit:
        raise ValidationError(field, f"must be at most {limit} characters, got {len(value)}")


def _check_text(spec: TaskSpec) -> None:
    """Command, name and the other free-text fields: present where required, bounded."""
    if not spec.command.strip():
        raise ValidationError("command", "must not be empty")
    _check_length(spec.command, MAX_COMMAND, "command")
    _check_length(spec.name, MAX_NAME, "name")
    _check_length(spec.description, MAX_DESCRIPTION, "description")
    if not spec.kind.strip():
        raise ValidationError("kind", "must not be empty (leave it unset for the default kind)")
    _check_length(spec.kind, MAX_KIND, "kind")
    if spec.idempotency_key is not None:
        if not spec.idempotency_key:
            raise ValidationError("idempotency_key", "must not be empty when set")
        _check_length(spec.idempotency_key, MAX_IDEMPOTENCY_KEY, "idempotency_key")


def _check_execution(spec: TaskSpec) -> None:
    """Arguments only for the exec executor; priority in range."""
    if spec.args and spec.executor is not Executor.EXEC:
        raise ValidationError("args", "only the exec executor takes arguments")
    if len(spec.args) > MAX_ARGS:
        raise ValidationError("args", f"at most {MAX_ARGS} arguments, got {len(spec.args)}")
    characters = sum(len(argument) for argument in spec.args)
    if characters > MAX_ARGS_CHARACTERS:
        raise ValidationError(
            "args", f"must be at most {MAX_ARGS_CHARACTERS} characters in all, got {characters}"
        )
    check_priority(spec.priority)


def _check_placement(spec: TaskSpec, topology: Topology) -> None:
    """A known region, and one at all when placement is prefer (a region-less run floats)."""
    if spec.region is not None:
        check_region(spec.region, topology)
    elif spec.placement is Placement.PREFER:
        raise ValidationError(
            "placement", "prefer needs a region to prefer: set region, or leave placement unset"
        )


def _check_positive(span: timedelta | None, field: str) -> None:
    """Unset, or longer than zero."""
    if span is not None and span <= timedelta(0):
        raise ValidationError(field, f"must be positive when set, got {span.total_seconds()}s")


def _check_retry(policy: RetryPolicy) -> None:
    """Attempts, backoffs, multiplier and retried states within their ranges."""
    if not 1 <= policy.max_attempts <= MAX_ATTEMPTS:
        raise ValidationError("retry.max_attempts", f"must be between 1 and {MAX_ATTEMPTS}")
    if policy.initial_backoff < timedelta(0):
        raise ValidationError("retry.initial_backoff", "must not be negative")
    if policy.max_backoff < policy.initial_backoff:
        raise ValidationError("retry.max_backoff", "must not be shorter than initial_backoff")
    if policy.multiplier < 1:
        raise ValidationError("retry.multiplier", f"must be at least 1, got {policy.multiplier}")
    unexpected = policy.retry_on - RETRYABLE_STATES
    if unexpected:
        names = ", ".join(sorted(state.name for state in unexpected))
        raise ValidationError("retry.retry_on", f"only FAILED, TIMED_OUT and LOST, got {names}")


def _check_labels(labels: Mapping[str, str]) -> None:
    """A bounded map of non-empty keys."""
    if len(labels) > MAX_LABELS:
        raise ValidationError("labels", f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not key:
            raise ValidationError("labels", "label keys must not be empty")
        _check_length(key, MAX_LABEL_KEY, f"labels.{key}")
        _check_length(value, MAX_LABEL_VALUE, f"labels.{key}")
