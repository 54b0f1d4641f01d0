"""The classic TaskMaster-compatible pair: ``POST /schedule`` and ``GET /status?task_id=``.

Kept byte for byte: instants travel as integer Unix seconds, errors are plain text, a timestamp
that has not happened yet is left out of ``/status``, naive ``scheduled_at`` values are UTC.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from uuid import UUID

from aiohttp import web

from taskmesh.common.errors import NotFoundError, TaskmeshError
from taskmesh.common.model import AtSchedule, RunState, TaskSpec, TaskStatus
from taskmesh.master.errors import http_headers, http_status, reportable
from taskmesh.master.task_api import TaskApi

INVALID_DATE = "Invalid date format. Use ISO 8601 format."
INVALID_JSON = "Invalid JSON. Send an object with command and scheduled_at."
INVALID_COMMAND = "Invalid command. Provide a non-empty command string."
MISSING_TASK_ID = "Missing task_id. Use /status?task_id=ID."
TASK_NOT_FOUND = "Task not found."


class ClassicApi:
    """``/schedule`` and ``/status`` over a ``TaskApi``."""

    def __init__(self, api: TaskApi) -> None:
        """Serve the classic endpoints from ``api``."""
        self._api = api

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Register the endpoints; other methods on these paths get 405."""
        router.add_post("/schedule", self.schedule)
        router.add_get("/status", self.status)
        router.add_get("/status/", self.status)

    async def schedule(self, request: web.Request) -> web.Response:
        """Store a one-shot task due at ``scheduled_at``."""
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            return _text(400, INVALID_JSON)
        if not isinstance(body, dict):
            return _text(400, INVALID_JSON)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            return _text(400, INVALID_COMMAND)
        at = parse_instant(body.get("scheduled_at"))
        if at is None:
            return _text(400, INVALID_DATE)
        try:
            submission = await self._api.submit(
                TaskSpec(name="", command=command, schedule=AtSchedule(at))
            )
        except TaskmeshError as error:
            return _error(error)
        answer = {
            "command": submission.task.spec.command,
            "scheduled_at": unix_seconds(at),
            "task_id": str(submission.task.id),
        }
        return web.json_response(answer)

    async def status(self, request: web.Request) -> web.Response:
        """The timeline of a task's latest run."""
        text = request.query.get("task_id", "").strip()
        if not text:
            return _text(400, MISSING_TASK_ID)
        try:
            status = await self._api.task_status(UUID(text))
        except (ValueError, NotFoundError):
            return _text(404, TASK_NOT_FOUND)
        except TaskmeshError as error:
            return _error(error)
        return web.json_response(status_json(status))


def parse_instant(value: object) -> datetime | None:
    """An RFC 3339 / ISO 8601 instant, UTC when it has no offset; None when malformed."""
    if not isinstance(value, str):
        return None
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant


def unix_seconds(instant: datetime) -> int:
    """Whole seconds since the Unix epoch (rounded down)."""
    return math.floor(instant.timestamp())


def status_json(status: TaskStatus) -> dict[str, object]:
    """The classic status object; timestamps that have not happened are left out."""
    task, run = status.task, status.latest_run
    scheduled = run.due_at if run is not None else None
    if scheduled is None and isinstance(task.spec.schedule, AtSchedule):
        scheduled = task.spec.schedule.at
    finished = run.finished_at if run is not None else None
    succeeded = run is not None and run.state is RunState.SUCCEEDED
    moments = {
        "scheduled_at": scheduled,
        "picked_at": run.delegated_at if run is not None else None,
        "started_at": run.started_at if run is not None else None,
        "completed_at": finished if succeeded else None,
        "failed_at": None if succeeded else finished,
    }
    answer: dict[str, object] = {"task_id": str(task.id), "command": task.spec.command}
    answer.update({key: unix_seconds(at) for key, at in moments.items() if at is not None})
    return answer


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A plain-text answer, the body exactly ``message``."""
    return web.Response(status=status, text=message, headers=headers)


def _error(error: TaskmeshError) -> web.Response:
    """A plain-text error answer with the status the error maps to."""
    error = reportable(error)
    # str() of a ValidationError reads "field: message".
    return _text(http_status(error), str(error), http_headers(error))
