"""Semantic checks of submitted tasks, field by field."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import (
    AtSchedule,
    CronSchedule,
    Executor,
    IntervalSchedule,
    Placement,
    RetryPolicy,
    RunState,
    TaskSpec,
    WorkflowTask,
)
from taskmesh.common.topology import RegionConfig, Topology
from taskmesh.master.validation import default_name, validated_spec
from taskmesh.master.workflow_validation import validated_workflow

TOPOLOGY = Topology(regions=(RegionConfig("eu"), RegionConfig("us")))
VALID = TaskSpec(name="job", command="echo hi")


def check(**changes: Any) -> TaskSpec:
    """Validate ``VALID`` with some fields replaced."""
    return validated_spec(replace(VALID, **changes), TOPOLOGY)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"command": ""}, "command"),
        ({"command": " \t"}, "command"),
        ({"command": "x" * 70_000}, "command"),
        ({"name": "n" * 300}, "name"),
        ({"description": "d" * 9_000}, "description"),
        ({"priority": 1001}, "priority"),
        ({"priority": -1001}, "priority"),
        ({"region": "mars"}, "region"),
        ({"placement": Placement.PREFER}, "placement"),
        ({"kind": ""}, "kind"),
        ({"args": ("a",)}, "args"),
        ({"executor": Executor.EXEC, "args": ("a",) * 2000}, "args"),
        ({"executor": Executor.EXEC, "args": ("a" * 40_000,) * 2}, "args"),
        ({"dependencies": tuple(uuid4() for _ in range(1001))}, "dependencies"),
        ({"schedule": AtSchedule(datetime(2030, 1, 1))}, "schedule.at.at"),
        ({"schedule": CronSchedule("every minute")}, "schedule.cron.expression"),
        ({"schedule": CronSchedule("0 0 30 2 *")}, "schedule.cron.expression"),
        ({"schedule": CronSchedule("* * * * *", "Mars/Olympus")}, "schedule.cron.timezone"),
        ({"schedule": CronSchedule("* * * * *", "../etc/passwd")}, "schedule.cron.timezone"),
        ({"schedule": IntervalSchedule(timedelta(0))}, "schedule.interval.every"),
        ({"schedule": IntervalSchedule(timedelta(seconds=-1))}, "schedule.interval.every"),
        ({"timeout": timedelta(seconds=-1)}, "timeout"),
        ({"timeout": timedelta(0)}, "timeout"),
        ({"schedule_to_start_timeout": timedelta(seconds=-1)}, "schedule_to_start_timeout"),
        ({"retry": RetryPolicy(max_attempts=0)}, "retry.max_attempts"),
        ({"retry": RetryPolicy(max_attempts=101)}, "retry.max_attempts"),
        ({"retry": RetryPolicy(initial_backoff=timedelta(seconds=-1))}, "retry.initial_backoff"),
        (
            {"retry": RetryPolicy(initial_backoff=timedelta(2), max_backoff=timedelta(1))},
            "retry.max_backoff",
        ),
        ({"retry": RetryPolicy(multiplier=0.9)}, "retry.multiplier"),
        ({"retry": RetryPolicy(retry_on=frozenset({RunState.CANCELLED}))}, "retry.retry_on"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 300}, "idempotency_key"),
        ({"labels": {"": "x"}}, "labels"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "labels"),
        ({"labels": {"k": "v" * 2000}}, "labels.k"),
    ],
)
def test_each_invalid_field_is_named(changes: dict[str, Any], field: str) -> None:
    """The error names the field and says something about it."""
    with pytest.raises(ValidationError) as raised:
        check(**changes)
    assert raised.value.field == field
    assert raised.value.message


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"region": "us", "placement": Placement.STRICT},
        {"region": "us", "placement": Placement.PREFER},
        {"priority": 1000},
        {"priority": -1000},
        {"executor": Executor.EXEC, "args": ("-v",)},
        {"schedule": AtSchedule(datetime(2000, 1, 1, tzinfo=UTC))},
        {"schedule": CronSchedule("*/5 * * * *", "Europe/Paris")},
        {"schedule": CronSchedule("@daily")},
        {"schedule": IntervalSchedule(timedelta(seconds=1))},
        {"timeout": timedelta(seconds=1)},
        {"retry": RetryPolicy(max_attempts=3, retry_on=frozenset({RunState.FAILED}))},
        {"dependencies": (uuid4(),)},
        {"labels": {"team": "core"}},
    ],
)
def test_valid_specs_pass_unchanged(changes: dict[str, Any]) -> None:
    """A valid spec comes back as it was."""
    spec = replace(VALID, **changes)
    assert validated_spec(spec, TOPOLOGY) == spec


def test_an_empty_name_defaults_to_the_commands_first_word() -> None:
    """As the Python client names tasks."""
    assert check(name="", command="  backup.sh --all").name == "backup.sh"
    assert default_name("") == ""


def test_a_workflow_task_with_too_many_dependencies_is_named() -> None:
    names = [f"t{i}" for i in range(1002)]
    items = [WorkflowTask(name, VALID) for name in names[:-1]]
    items.append(WorkflowTask(names[-1], VALID, depends_on=tuple(names[:-1])))
    with pytest.raises(ValidationError) as caught:
        validated_workflow(items, TOPOLOGY)
    assert caught.value.field == "tasks[1001].depends_on"
    assert "at most 1000 dependencies per task, got 1001" in caught.value.message


def test_a_workflow_over_the_task_limit_is_refused() -> None:
    items = [WorkflowTask(f"t{i}", VALID) for i in range(10_001)]
    with pytest.raises(ValidationError) as caught:
        validated_workflow(items, TOPOLOGY)
    assert caught.value.field == "tasks"
