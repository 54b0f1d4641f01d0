"""The scheduling commands' local side: workflow files and the schedule table (no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from taskmesh.cli import build_parser
from taskmesh.cli.schedules import schedule_json, schedule_rows
from taskmesh.cli.workflows import read_workflow
from taskmesh.client import Client
from taskmesh.common.errors import TaskmeshError, ValidationError
from taskmesh.common.model import (
    CronSchedule,
    IntervalSchedule,
    RetryPolicy,
    RunState,
    ScheduledTask,
    Task,
    TaskSpec,
)

WORKFLOW = """
name: nightly
tasks:
  - name: extract
    command: ./extract.sh
    timeout: 600s
    retry: {max_attempts: 3, initial_backoff: 5s, retry_on: [failed, timed_out]}
  - name: load
    command: ./load.sh
    priority: 5
    depends_on: [extract]
"""


def test_a_workflow_file_reads_into_tasks_with_local_names(tmp_path: Path) -> None:
    """Local names default to task names; specs take every field a REST body takes."""
    path = tmp_path / "flow.yaml"
    path.write_text(WORKFLOW)
    name, tasks = read_workflow(path)
    assert name == "nightly"
    assert [(t.local_name, t.depends_on) for t in tasks] == [
        ("extract", ()),
        ("load", ("extract",)),
    ]
    assert tasks[0].spec.timeout == timedelta(minutes=10)
    assert tasks[0].spec.retry == RetryPolicy(
        max_attempts=3,
        initial_backoff=timedelta(seconds=5),
        retry_on=frozenset({RunState.FAILED, RunState.TIMED_OUT}),
    )
    assert tasks[1].spec.priority == 5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tasks: [", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping with 'name' and 'tasks'"),
        ("tasks: {}", "tasks: must be a list"),
        ("tasks: [{name: a, command: x, priority: high}]", "tasks[0].priority"),
        ("tasks: [{name: a, command: x, depends_on: b}]", "tasks[0].depends_on: must be a list"),
        ("tasks: [{name: a, comand: x}]", "tasks[0].comand: unknown field"),
    ],
)
def test_a_bad_workflow_file_names_the_file_and_the_field(
    tmp_path: Path, text: str, message: str
) -> None:
    """Every error starts with the file, then says what is wrong where."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskmeshError) as raised:
        read_workflow(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert message in str(raised.value)


def test_a_missing_workflow_file_is_a_clear_error(tmp_path: Path) -> None:
    """No traceback for a file that is not there."""
    with pytest.raises(TaskmeshError, match="cannot read it"):
        read_workflow(tmp_path / "absent.yaml")


def scheduled(
    schedule: CronSchedule | IntervalSchedule, paused: bool, *fires: datetime
) -> ScheduledTask:
    """A listed schedule of a task called ``job``."""
    task = Task(
        id=UUID(int=1),
        spec=TaskSpec(name="job", command="true", schedule=schedule),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        paused=paused,
    )
    return ScheduledTask(task, None, fires)


def test_schedule_rows_show_fires_on_the_schedules_wall_clock() -> None:
    """Cron fires in their own zone (DST offsets visible), one line per further fire."""
    spring = [datetime(2026, 3, 28, 1, 30, tzinfo=UTC), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)]
    rows = schedule_rows(scheduled(CronSchedule("30 2 * * *", "Europe/Berlin"), False, *spring))
    assert rows == [
        [
            str(UUID(int=1)),
            "job",
            "cron 30 2 * * *",
            "Europe/Berlin",
            "no",
            "2026-03-28 02:30:00+01:00",
        ],
        ["", "", "", "", "", "2026-03-29 03:00:00+02:00"],
    ]


def test_a_paused_schedule_shows_no_fires() -> None:
    """Paused: yes, and a dash for the fire times; JSON says the same."""
    item = scheduled(IntervalSchedule(timedelta(seconds=90)), True)
    (row,) = schedule_rows(item)
    assert row[2:] == ["every 90s", "UTC", "yes", "-"]
    assert schedule_json(item)["next_fires"] == []
    assert schedule_json(item)["paused"] is True


def test_the_client_refuses_two_schedules_before_calling() -> None:
    """At most one of at, cron and every; the error names the field."""
    with Client("127.0.0.1:1") as client, pytest.raises(ValidationError) as raised:
        client.submit("true", cron="* * * * *", every=timedelta(seconds=5))
    assert raised.value.field == "schedule"


def test_submit_parses_the_schedule_policies() -> None:
    """--every, --misfire, --overlap and --schedule-to-start-timeout reach the parsed args."""
    policies = ["--misfire", "all", "--overlap", "replace", "--schedule-to-start-timeout", "1m"]
    args = build_parser().parse_args(["submit", "--command", "true", "--every", "90s", *policies])
    assert args.every == timedelta(seconds=90)
    assert (args.misfire, args.overlap) == ("all", "replace")
    assert args.schedule_to_start_timeout == timedelta(minutes=1)
