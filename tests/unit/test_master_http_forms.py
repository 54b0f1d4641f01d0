"""REST JSON forms, the classic status object, and the HTTP/gRPC error mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import grpc
import pytest

from taskmesh.common.errors import (
    ConflictError,
    LedgerUnavailableError,
    NotFoundError,
    OverloadedError,
    TaskmeshError,
    UnavailableError,
    ValidationError,
)
from taskmesh.common.model import (
    AtSchedule,
    CronSchedule,
    Executor,
    MisfirePolicy,
    Run,
    RunState,
    Task,
    TaskSpec,
    TaskStatus,
)
from taskmesh.master.classic_api import parse_instant, status_json, unix_seconds
from taskmesh.master.errors import (
    NotSupportedError,
    grpc_status,
    http_body,
    http_headers,
    http_status,
)
from taskmesh.master.task_json import spec_from_json

T = datetime(2030, 1, 1, tzinfo=UTC)
UNIX_T = 1_893_456_000


def test_spec_from_json_reads_proto_json_and_short_enum_names() -> None:
    """RFC 3339 instants, durations, enum names long or short."""
    spec = spec_from_json(
        {
            "command": "prog",
            "executor": "exec",
            "args": ["-v"],
            "schedule": {"cron": {"expression": "* * * * *", "misfire": "all"}},
            "timeout": "1.5s",
            "retry": {"maxAttempts": 3, "retry_on": ["failed", "RUN_STATE_LOST"]},
            "labels": {"team": "core"},
        }
    )
    assert spec.executor is Executor.EXEC
    assert spec.args == ("-v",)
    assert spec.schedule == CronSchedule("* * * * *", "UTC", misfire=MisfirePolicy.ALL)
    assert spec.timeout == timedelta(seconds=1.5)
    assert spec.retry.max_attempts == 3
    assert spec.retry.retry_on == {RunState.FAILED, RunState.LOST}
    assert spec.labels == {"team": "core"}


def test_spec_from_json_reads_an_at_schedule() -> None:
    """The instant of an at-schedule."""
    spec = spec_from_json({"command": "x", "schedule": {"at": {"at": "2030-01-01T00:00:00Z"}}})
    assert spec.schedule == AtSchedule(T)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("x", "body"),
        ({"command": "x", "nope": 1}, "nope"),
        ({"command": 5}, "command"),
        ({"priority": "high"}, "priority"),
        ({"timeout": 5}, "timeout"),
        ({"executor": "teleport"}, "executor"),
        ({"labels": {"a": 1}}, "labels"),
        ({"schedule": {"at": {}}}, "schedule.at.at"),
        ({"dependencies": ["x"]}, "dependencies"),
    ],
)
def test_spec_from_json_names_the_bad_field(body: Any, field: str) -> None:
    """The first malformed field is named."""
    with pytest.raises(ValidationError) as raised:
        spec_from_json(body)
    assert raised.value.field == field


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2030-01-01T00:00:00Z", T),
        ("2030-01-01T00:00:00", T),
        ("2030-01-01T02:00:00+02:00", T),
        ("2030-01-01", T),
        (" 2030-01-01T00:00:00Z ", T),
    ],
)
def test_parse_instant_accepts_iso_8601(text: str, expected: datetime) -> None:
    """Offsets honoured, naive times are UTC."""
    assert parse_instant(text) == expected


@pytest.mark.parametrize("value", ["", "soon", "2030-02-30T00:00:00Z", 1893456000, None, []])
def test_parse_instant_refuses_the_rest(value: object) -> None:
    """Anything else is no instant."""
    assert parse_instant(value) is None


def test_unix_seconds_rounds_down() -> None:
    """Whole seconds, also before the epoch."""
    assert unix_seconds(T + timedelta(milliseconds=999)) == UNIX_T
    assert unix_seconds(datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC)) == -1


def _status(run: Run | None, spec: TaskSpec | None = None) -> TaskStatus:
    task = Task(uuid4(), spec or TaskSpec(name="n", command="echo"), T)
    return TaskStatus(task, run)


def _run(state: RunState, **fields: Any) -> Run:
    return Run(uuid4(), uuid4(), 1, state, 1, 0, due_at=T, created_at=T, **fields)


def test_status_json_leaves_out_what_has_not_happened() -> None:
    """A pending run has only its scheduled time."""
    status = _status(_run(RunState.PENDING))
    assert status_json(status) == {
        "task_id": str(status.task.id),
        "command": "echo",
        "scheduled_at": UNIX_T,
    }


def test_status_json_of_a_task_without_runs_uses_its_at_schedule() -> None:
    """Scheduled time from the schedule; a cron task without runs has none."""
    assert (
        status_json(_status(None, TaskSpec("n", "echo", schedule=AtSchedule(T))))["scheduled_at"]
        == UNIX_T
    )
    assert "scheduled_at" not in status_json(_status(None, TaskSpec("n", "echo")))


@pytest.mark.parametrize(
    ("state", "key"),
    [
        (RunState.SUCCEEDED, "completed_at"),
        (RunState.FAILED, "failed_at"),
        (RunState.TIMED_OUT, "failed_at"),
        (RunState.LOST, "failed_at"),
        (RunState.CANCELLED, "failed_at"),
    ],
)
def test_status_json_ends_with_completed_or_failed(state: RunState, key: str) -> None:
    """Success completes; every other end fails."""
    run = _run(
        state,
        delegated_at=T + timedelta(seconds=1),
        started_at=T + timedelta(seconds=2),
        finished_at=T + timedelta(seconds=3),
    )
    body = status_json(_status(run))
    assert list(body)[2:] == ["scheduled_at", "picked_at", "started_at", key]
    assert body[key] == UNIX_T + 3


ERRORS: list[tuple[TaskmeshError, int, grpc.StatusCode]] = [
    (ValidationError("f", "bad"), 400, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError("gone"), 404, grpc.StatusCode.NOT_FOUND),
    (ConflictError("late"), 409, grpc.StatusCode.FAILED_PRECONDITION),
    (OverloadedError("busy", 2.4), 429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (UnavailableError("down"), 503, grpc.StatusCode.UNAVAILABLE),
    (LedgerUnavailableError("db down"), 503, grpc.StatusCode.UNAVAILABLE),
    (NotSupportedError("later"), 501, grpc.StatusCode.UNIMPLEMENTED),
    (TaskmeshError("?"), 500, grpc.StatusCode.INTERNAL),
]


@pytest.mark.parametrize(("error", "status", "code"), ERRORS)
def test_each_error_has_one_http_status_and_one_grpc_code(
    error: TaskmeshError, status: int, code: grpc.StatusCode
) -> None:
    """The two mappings."""
    assert http_status(error) == status
    assert grpc_status(error) is code


def test_http_error_bodies_and_headers() -> None:
    """The field when known; Retry-After when retrying helps."""
    assert http_body(ValidationError("priority", "too high")) == {
        "error": {"field": "priority", "message": "too high"}
    }
    assert http_body(NotFoundError("gone")) == {"error": {"field": None, "message": "gone"}}
    assert http_headers(OverloadedError("busy", 2.4)) == {"Retry-After": "2"}
    assert http_headers(LedgerUnavailableError("down")) == {"Retry-After": "1"}
    assert http_headers(NotFoundError("gone")) == {}
