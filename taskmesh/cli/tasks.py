"""Client commands: ``taskmesh submit|status|list|logs|cancel|priority|retry`` over gRPC."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from taskmesh.cli.shared import add_master_options, master_client
from taskmesh.client import TaskInfo
from taskmesh.common import model
from taskmesh.common.command_line import EXIT_OK
from taskmesh.common.errors import ValidationError
from taskmesh.common.topology import parse_duration

if TYPE_CHECKING:
    from taskmesh.cli.shared import Subcommands

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def add_task_commands(commands: Subcommands) -> None:
    """Register the client commands."""
    _add_submit(commands)
    status = commands.add_parser("status", help="show one task: state, timestamps, output")
    status.add_argument("task_id")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=show_status)
    listing = commands.add_parser("list", help="list recent tasks with their latest run")
    listing.add_argument("--state", choices=[s.value for s in model.RunState])
    listing.add_argument("--region")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(handler=list_tasks)
    logs = commands.add_parser("logs", help="print the output tail of a task's latest run")
    logs.add_argument("task_id")
    logs.set_defaults(handler=show_logs)
    cancel = commands.add_parser("cancel", help="cancel a task's unfinished runs")
    cancel.add_argument("task_id")
    cancel.set_defaults(handler=cancel_task)
    priority = commands.add_parser("priority", help="change a task's priority (queued runs too)")
    priority.add_argument("task_id")
    priority.add_argument("priority", type=int, help="new base priority, -1000..1000")
    priority.set_defaults(handler=set_priority)
    retry = commands.add_parser(
        "retry", help="run a failed, timed out, cancelled or upstream_failed task again"
    )
    retry.add_argument("task_id")
    retry.set_defaults(handler=retry_task)
    for parser in (status, listing, logs, cancel, priority, retry):
        add_master_options(parser)


def _add_submit(commands: Subcommands) -> None:
    submit = commands.add_parser("submit", help="submit a task; prints its id")
    submit.add_argument("--command", required=True, help="the command line to run")
    submit.add_argument("--name", help="task name (default: the command's first word)")
    submit.add_argument("--executor", choices=[e.value for e in model.Executor], default="shell")
    when = submit.add_mutually_exclusive_group()
    when.add_argument("--at", help="run once at this RFC 3339 / ISO 8601 time (default: now)")
    when.add_argument("--cron", help="run on this cron schedule ('*/5 * * * *')")
    when.add_argument("--every", type=parse_duration, help="run every interval, e.g. 90s")
    submit.add_argument("--timezone", default="UTC", help="IANA time zone of --cron")
    submit.add_argument(
        "--misfire",
        choices=[m.value for m in model.MisfirePolicy],
        default="latest",
        help="missed fires of --cron/--every (default: latest)",
    )
    submit.add_argument(
        "--overlap",
        choices=[o.value for o in model.OverlapPolicy],
        default="allow",
        help="a fire while the previous run is unfinished (default: allow)",
    )
    submit.add_argument("--priority", type=int, default=model.DEFAULT_PRIORITY)
    submit.add_argument("--region", help="run in this region (default: any)")
    submit.add_argument(
        "--placement",
        choices=[p.value for p in model.Placement],
        default=model.Placement.STRICT.value,
        help="strict: only --region runs it; prefer: a fallback region while it is down",
    )
    submit.add_argument("--kind", default=model.DEFAULT_KIND, help="task kind (breaker label)")
    submit.add_argument("--timeout", type=parse_duration, help="execution timeout, e.g. 30s")
    submit.add_argument(
        "--schedule-to-start-timeout",
        type=parse_duration,
        help="end timed_out if not started this long after due, e.g. 1m",
    )
    submit.add_argument("--idempotency-key", help="a repeated submit returns the first task")
    submit.add_argument("--description", default="")
    submit.add_argument("--wait", action="store_true", help="wait for the task and print it")
    add_master_options(submit)
    submit.set_defaults(handler=submit_task)


def submit_task(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Submit one task and print its id (or, with --wait, its final status)."""
    with master_client(args, env) as client:
        task = client.submit(
            args.command,
            name=args.name,
            executor=model.Executor(args.executor),
            at=_instant(args.at) if args.at else None,
            cron=args.cron,
            timezone=args.timezone,
            every=args.every,
            misfire=model.MisfirePolicy(args.misfire),
            overlap=model.OverlapPolicy(args.overlap),
            priority=args.priority,
            region=args.region,
            placement=model.Placement(args.placement),
            kind=args.kind,
            timeout=args.timeout,
            schedule_to_start_timeout=args.schedule_to_start_timeout,
            idempotency_key=args.idempotency_key,
            description=args.description,
        )
        if not args.wait:
            print(task.id)
            return EXIT_OK
        print(format_status(client.wait(task.id, timeout=24 * 3600)))
    return EXIT_OK


def show_status(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print one task's latest run: state, timestamps, exit code."""
    with master_client(args, env) as client:
        info = client.get(args.task_id)
    print(json.dumps(status_json(info), indent=2) if args.json else format_status(info))
    return EXIT_OK


def list_tasks(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print a table of recent tasks."""
    states = [model.RunState(args.state)] if args.state else []
    with master_client(args, env) as client:
        statuses = client.list(states=states, region=args.region, limit=args.limit)
    rows = [_list_row(status) for status in statuses]
    print(format_table(["TASK ID", "NAME", "STATE", "REGION", "WORKER", "PRIO", "DUE"], rows))
    return EXIT_OK


def show_logs(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print the output tail of the task's latest run."""
    with master_client(args, env) as client:
        run = client.get(args.task_id).latest_run
    print(run.output_tail if run else "", end="")
    return EXIT_OK


def cancel_task(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Cancel a task's unfinished runs."""
    with master_client(args, env) as client:
        cancelled = client.cancel(args.task_id)
    print(f"cancelled {len(cancelled)} run(s)")
    return EXIT_OK


def set_priority(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Give a task and its unfinished runs a new priority."""
    with master_client(args, env) as client:
        changed = client.set_priority(args.task_id, args.priority)
    print(f"priority {args.priority} for {len(changed)} unfinished run(s)")
    return EXIT_OK


def retry_task(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Give a task that ended without success one more attempt."""
    with master_client(args, env) as client:
        retried = client.retry(args.task_id)
    run = retried.run
    print(f"attempt {run.attempt} of task {retried.task_id} is {run.state} (run {run.id})")
    if retried.requeued:
        print(f"re-queued {len(retried.requeued)} upstream_failed dependent(s) behind it")
    return EXIT_OK


def format_status(info: TaskInfo) -> str:
    """Human text for ``taskmesh status``."""
    run = info.latest_run
    lines = [
        f"task      {info.task.id}  {info.task.spec.name}",
        f"command   {info.task.spec.command}",
    ]
    if run is None:
        return "\n".join([*lines, "state     no run yet"])
    lines += [
        f"state     {run.state.value} (attempt {run.attempt})",
        f"region    {run.region or '-'}   worker {run.worker_id or '-'}",
    ]
    for label, instant in _timeline(run):
        lines.append(f"{label:<10}{_format_time(instant)}")
    if run.exit_code is not None:
        lines.append(f"exit code {run.exit_code}")
    if run.error:
        lines.append(f"error     {run.error}")
    return "\n".join(lines)


def status_json(info: TaskInfo) -> dict[str, object]:
    """Machine-readable ``taskmesh status --json``."""
    run = info.latest_run
    body: dict[str, object] = {"task_id": str(info.task.id), "name": info.task.spec.name}
    if run is not None:
        body |= {"run_id": str(run.id), "state": run.state.value, "attempt": run.attempt}
        body |= {"region": run.region, "worker": run.worker_id, "exit_code": run.exit_code}
        body |= {label: instant.isoformat() for label, instant in _timeline(run)}
    return body


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def _list_row(status: model.TaskStatus) -> list[str]:
    run = status.latest_run
    spec = status.task.spec
    if run is None:
        return [
            str(status.task.id),
            spec.name,
            "scheduled",
            spec.region or "-",
            "-",
            str(spec.priority),
            "-",
        ]
    return [
        str(status.task.id),
        spec.name,
        run.state.value,
        run.region or "-",
        run.worker_id or "-",
        str(run.priority),
        _format_time(run.due_at),
    ]


def _timeline(run: model.Run) -> list[tuple[str, datetime]]:
    stamps = [
        ("due", run.due_at),
        ("delegated", run.delegated_at),
        ("assigned", run.assigned_at),
        ("started", run.started_at),
        ("finished", run.finished_at),
    ]
    return [(label, instant) for label, instant in stamps if instant is not None]


def _format_time(instant: datetime) -> str:
    return instant.astimezone().strftime(TIME_FORMAT)


def _instant(text: str) -> datetime:
    """An RFC 3339 / ISO 8601 time; naive times are UTC."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError("--at", f"expected an ISO 8601 time, got {text!r}") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)
