"""Schedule commands: ``taskmesh pause|resume TASK`` and ``taskmesh schedule [--next N]``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskmesh.cli.shared import add_master_options, master_client
from taskmesh.cli.tasks import format_table
from taskmesh.common import model
from taskmesh.common.command_line import EXIT_OK

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands

HEADER = ["TASK ID", "NAME", "SCHEDULE", "TIME ZONE", "PAUSED", "NEXT FIRES"]


def add_schedule_commands(commands: Subcommands) -> None:
    """Register ``pause``, ``resume`` and ``schedule``."""
    pause = commands.add_parser("pause", help="pause a cron or interval task's schedule")
    pause.add_argument("task_id")
    pause.set_defaults(handler=change_schedule, pause=True)
    resume = commands.add_parser("resume", help="resume a paused schedule (misfire policy)")
    resume.add_argument("task_id")
    resume.set_defaults(handler=change_schedule, pause=False)
    schedule = commands.add_parser("schedule", help="show upcoming fire times of recurring tasks")
    schedule.add_argument(
        "--next", type=int, default=5, metavar="N", help="fire times per task (1-100, default 5)"
    )
    schedule.add_argument("--json", action="store_true", help="print JSON instead of a table")
    schedule.set_defaults(handler=show_schedule)
    for parser in (pause, resume, schedule):
        add_master_options(parser)


def change_schedule(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Pause or resume one schedule (``args.pause`` says which)."""
    with master_client(args, env) as client:
        task = client.pause(args.task_id) if args.pause else client.resume(args.task_id)
    print(f"{'paused' if args.pause else 'resumed'} {task.id} ({task.spec.name})")
    return EXIT_OK


def show_schedule(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print every recurring task with its next fire times."""
    with master_client(args, env) as client:
        found = client.schedules(next_fires=args.next)
    if args.json:
        print(json.dumps([schedule_json(item) for item in found], indent=2))
    else:
        print(format_table(HEADER, [row for item in found for row in schedule_rows(item)]))
    return EXIT_OK


def describe(schedule: model.Schedule | None) -> tuple[str, str]:
    """A schedule as (what, time zone) text: ``cron 30 2 * * *`` or ``every 90s``."""
    match schedule:
        case model.CronSchedule():
            return f"cron {schedule.expression}", schedule.timezone
        case model.IntervalSchedule():
            return f"every {schedule.every.total_seconds():g}s", "UTC"
        case _:
            return "-", "-"


def _zone(name: str) -> tzinfo | None:
    """The zone fire times are shown in (the schedule's own), or None if unknown here."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _fire_text(fire: datetime, zone: tzinfo | None) -> str:
    """A fire time on the schedule's wall clock, with its UTC offset."""
    return fire.astimezone(zone).isoformat(sep=" ")


def schedule_rows(item: model.ScheduledTask) -> list[list[str]]:
    """The table rows of one task: its fields, then one more line per further fire time."""
    what, zone_name = describe(item.task.spec.schedule)
    zone = _zone(zone_name)
    fires = [_fire_text(fire, zone) for fire in item.next_fires] or ["-"]
    paused = "yes" if item.task.paused else "no"
    first = [str(item.task.id), item.task.spec.name, what, zone_name, paused, fires[0]]
    return [first, *[["", "", "", "", "", fire] for fire in fires[1:]]]


def schedule_json(item: model.ScheduledTask) -> dict[str, object]:
    """Machine-readable ``taskmesh schedule --json``."""
    what, zone = describe(item.task.spec.schedule)
    return {
        "task_id": str(item.task.id),
        "name": item.task.spec.name,
        "schedule": what,
        "timezone": zone,
        "paused": item.task.paused,
        "last_fire": None if item.last_fire is None else item.last_fire.isoformat(),
        "next_fires": [fire.isoformat() for fire in item.next_fires],
    }
