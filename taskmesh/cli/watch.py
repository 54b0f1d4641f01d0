"""``taskmesh watch``: follow run transitions live, as text for people or JSON for programs."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from contextlib import closing
from typing import TYPE_CHECKING

from taskmesh.cli.shared import add_master_options, master_client
from taskmesh.client import EventWatch
from taskmesh.common import model
from taskmesh.common.command_line import EXIT_OK
from taskmesh.common.errors import ValidationError

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands

TIME_FORMAT = "%H:%M:%S.%f"


def add_watch_command(commands: Subcommands) -> None:
    """Register ``taskmesh watch``."""
    watch = commands.add_parser(
        "watch",
        help="follow run transitions as they are recorded (Ctrl-C to stop)",
        description="Print every run transition the ledger records, in commit order. "
        "Filters combine with AND.",
    )
    watch.add_argument("--task", help="only runs of this task id")
    watch.add_argument("--workflow", help="only runs of this workflow's tasks")
    watch.add_argument("--run", help="only this run attempt id")
    watch.add_argument("--region", help="only runs in this region")
    watch.add_argument(
        "--state",
        action="append",
        default=[],
        choices=[state.value for state in model.RunState],
        help="only transitions into this state (repeatable)",
    )
    watch.add_argument(
        "--after-id", type=int, default=0, help="replay the log after this event id first"
    )
    watch.add_argument("--count", type=int, help="stop after this many events")
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    add_master_options(watch)
    watch.set_defaults(handler=watch_events)


def watch_events(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print events until interrupted or ``--count`` events have been printed."""
    if args.count is not None and args.count < 1:
        raise ValidationError("--count", f"must be at least 1, got {args.count}")
    watch = EventWatch(
        task_id=args.task,
        workflow_id=args.workflow,
        run_id=args.run,
        region=args.region,
        states=frozenset(model.RunState(state) for state in args.state),
        after_id=args.after_id,
    )
    render = event_json if args.json else format_event
    with master_client(args, env) as client, closing(client.watch(watch)) as batches:
        for event in _limited(_flatten(batches), args.count):
            print(render(event), flush=True)
    return EXIT_OK


def format_event(event: model.RunEvent) -> str:
    """One line for people: time, event id, run, attempt, transition, where."""
    source = event.from_state.value if event.from_state else "new"
    where = " ".join(
        part
        for part in (
            f"region={event.region}" if event.region else "",
            f"worker={event.worker_id}" if event.worker_id else "",
        )
        if part
    )
    line = (
        f"{event.at.astimezone().strftime(TIME_FORMAT)[:-3]}  #{event.id}  task {event.task_id}  "
        f"run {event.run_id} attempt {event.attempt}  {source} -> {event.to_state.value}"
    )
    return f"{line}  {where}" if where else line


def event_json(event: model.RunEvent) -> str:
    """One compact JSON object per event, for programs."""
    return json.dumps(
        {
            "id": event.id,
            "at": event.at.isoformat(),
            "task_id": str(event.task_id),
            "run_id": str(event.run_id),
            "attempt": event.attempt,
            "from_state": event.from_state.value if event.from_state else None,
            "to_state": event.to_state.value,
            "epoch": event.epoch,
            "region": event.region,
            "worker_id": event.worker_id,
            "detail": dict(event.detail),
        },
        separators=(",", ":"),
    )


def _flatten(batches: Iterable[list[model.RunEvent]]) -> Iterable[model.RunEvent]:
    """The events of every batch; keep-alive (empty) batches vanish."""
    for batch in batches:
        yield from batch


def _limited(events: Iterable[model.RunEvent], count: int | None) -> Iterable[model.RunEvent]:
    """The first ``count`` events, or all of them."""
    for seen, event in enumerate(events, start=1):
        yield event
        if count is not None and seen >= count:
            return
