"""The master's HTTP side (aiohttp): the ``/v1`` REST API, the classic pair, health, dashboard.

``/v1`` bodies are proto3 JSON (see ``task_json``); every error is
``{"error": {"field": ..., "message": ...}}`` with the status ``errors.http_status`` maps to.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

from aiohttp import web

from taskmesh.common.errors import NotFoundError, TaskmeshError, TooLargeError, ValidationError
from taskmesh.common.model import RunState, TaskFilter
from taskmesh.common.probes import Probes
from taskmesh.common.rpc.limits import MAX_MESSAGE_BYTES
from taskmesh.master.auth import ClientAuth, EventTickets
from taskmesh.master.classic_api import ClassicApi
from taskmesh.master.dashboard import Dashboard
from taskmesh.master.errors import http_body, http_headers, http_status
from taskmesh.master.http_auth import EventSession, bearer_auth
from taskmesh.master.task_api import TaskApi
from taskmesh.master.task_json import (
    run_event_json,
    run_json,
    scheduled_task_json,
    spec_from_json,
    task_json,
    task_status_json,
    workflow_field,
    workflow_from_json,
)
from taskmesh.master.workflow_routes import WorkflowRoutes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROTO_STATE_PREFIX = "RUN_STATE_"
# One bound for a request body and a gRPC message: the same submission fits either way.
MAX_BODY_BYTES = MAX_MESSAGE_BYTES


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn a ``TaskmeshError`` escaping a handler into the JSON error answer."""
    try:
        return await handler(request)
    except TaskmeshError as error:
        return web.json_response(
            http_body(error), status=http_status(error), headers=http_headers(error)
        )


class RestApi:
    """The HTTP routes over a ``TaskApi``."""

    def __init__(self, api: TaskApi, probes: Probes, auth: ClientAuth | None = None) -> None:
        """Serve ``api`` and the operator's ``probes`` (``/healthz``, ``/readyz``, ``/metrics``).

        With ``auth`` enabled every route but the probes and the static page needs a token.
        """
        self._api = api
        self._probes = probes
        self._auth = auth or ClientAuth(None)

    def application(self) -> web.Application:
        """The aiohttp application with every route."""
        tickets = EventTickets()
        app = web.Application(
            middlewares=[json_errors, bearer_auth(self._auth, tickets)],
            client_max_size=MAX_BODY_BYTES,
        )
        router = app.router
        EventSession(tickets).add_routes(router)
        router.add_post("/v1/tasks", self.submit)
        router.add_post("/v1/workflows", self.submit_workflow)
        router.add_get("/v1/tasks", self.list_tasks)
        router.add_get("/v1/tasks/{task_id}", self.get_task)
        router.add_get("/v1/tasks/{task_id}/events", self.task_events)
        router.add_post("/v1/tasks/{task_id}/cancel", self.cancel)
        router.add_post("/v1/tasks/{task_id}/priority", self.set_priority)
        router.add_post("/v1/tasks/{task_id}/pause", self.pause)
        router.add_post("/v1/tasks/{task_id}/resume", self.resume)
        router.add_get("/v1/schedules", self.list_schedules)
        router.add_post("/v1/tasks/{task_id}/retry", self.retry)
        for path in Probes.PATHS:
            router.add_get(path, self.probe)
        ClassicApi(self._api).add_routes(router)
        WorkflowRoutes(self._api).add_routes(router)
        Dashboard(self._api).install(app)
        return app

    async def probe(self, request: web.Request) -> web.Response:
        """``/healthz``, ``/readyz`` or ``/metrics``, answered by the daemon's ``Probes``."""
        answer = await self._probes.answer(request.path)
        if answer is None:
            raise web.HTTPNotFound()
        headers = {"Content-Type": answer.content_type}
        return web.Response(status=answer.status, body=answer.body, headers=headers)

    async def submit(self, request: web.Request) -> web.Response:
        """Store a task (201), or return the earlier one for a known idempotency key (200)."""
        submission = await self._api.submit(spec_from_json(await _json_body(request)))
        run = submission.first_run
        answer = {
            "task": task_json(submission.task),
            "first_run": None if run is None else run_json(run),
            "deduplicated": not submission.created,
        }
        return web.json_response(answer, status=201 if submission.created else 200)

    async def submit_workflow(self, request: web.Request) -> web.Response:
        """Store a DAG of tasks, all or nothing (201)."""
        name, tasks = workflow_from_json(await _json_body(request))
        try:
            workflow = await self._api.submit_workflow(tasks, name)
        except ValidationError as error:
            raise ValidationError(workflow_field(error.field), error.message) from None
        answer = {
            "workflow_id": str(workflow.workflow_id),
            "task_ids": {local: str(task.id) for local, (task, _) in workflow.tasks.items()},
            "tasks": [
                {"task": task_json(task), "first_run": None if run is None else run_json(run)}
                for task, run in workflow.tasks.values()
            ],
        }
        return web.json_response(answer, status=201)

    async def get_task(self, request: web.Request) -> web.Response:
        """A task and its most recent runs, newest first."""
        limit = _int_query(request, "run_limit", 0)
        task, runs = await self._api.get_task(_path_task_id(request), limit)
        return web.json_response({"task": task_json(task), "runs": [run_json(r) for r in runs]})

    async def task_events(self, request: web.Request) -> web.Response:
        """A task's newest transitions (``limit``, default 200), oldest first."""
        limit = _int_query(request, "limit", 0)
        events = await self._api.task_events(_path_task_id(request), limit)
        return web.json_response({"events": [run_event_json(event) for event in events]})

    async def list_tasks(self, request: web.Request) -> web.Response:
        """Tasks newest first, filtered (``state``, ``region``, ``kind``, ``search``, ``since``),
        paged by ``page_token``."""
        state = request.query.get("state") or None
        page = await self._api.list_tasks(
            states=() if state is None else (_run_state(state),),
            region=request.query.get("region") or None,
            filters=_task_filter(request),
            limit=_int_query(request, "limit", 0),
            page_token=request.query.get("page_token", ""),
        )
        tasks = [task_status_json(status) for status in page.items]
        return web.json_response({"tasks": tasks, "next_page_token": page.next_token})

    async def cancel(self, request: web.Request) -> web.Response:
        """Cancel a task's unfinished runs; the body may give a ``reason``."""
        task_id = _path_task_id(request)
        body = await _json_body(request, required=False)
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise ValidationError("reason", "must be a string")
        cancelled = await self._api.cancel(task_id, reason)
        return web.json_response({"cancelled_run_ids": [str(run_id) for run_id in cancelled]})

    async def set_priority(self, request: web.Request) -> web.Response:
        """Give a task and its unfinished runs the body's ``priority``."""
        task_id = _path_task_id(request)
        priority = (await _json_body(request)).get("priority")
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise ValidationError("priority", "must be an integer")
        changed = await self._api.set_priority(task_id, priority)
        return web.json_response({"run_ids": [str(run_id) for run_id in changed]})

    async def pause(self, request: web.Request) -> web.Response:
        """Pause a recurring task's schedule; answers the task and the fires cancelled ahead."""
        task, cancelled = await self._api.pause(_path_task_id(request))
        answer = {"task": task_json(task), "cancelled_run_ids": [str(i) for i in cancelled]}
        return web.json_response(answer)

    async def resume(self, request: web.Request) -> web.Response:
        """Resume a paused schedule; answers the task."""
        task = await self._api.resume(_path_task_id(request))
        return web.json_response({"task": task_json(task)})

    async def list_schedules(self, request: web.Request) -> web.Response:
        """Every recurring task with its ``next`` fire times (default 5)."""
        now, found = await self._api.schedules(_int_query(request, "next", 0))
        return web.json_response(
            {
                "schedules": [scheduled_task_json(item) for item in found],
                "observed_at": now.isoformat(),
            }
        )

    async def retry(self, request: web.Request) -> web.Response:
        """One more attempt for a task that ended without success (409 for others)."""
        retried = await self._api.retry(_path_task_id(request))
        return web.json_response(
            {"run": run_json(retried.run), "requeued": [run_json(r) for r in retried.requeued]}
        )


async def _json_body(request: web.Request, *, required: bool = True) -> dict[str, object]:
    """The request's JSON object; an empty body is ``{}`` unless ``required``."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        size = request.content_length
        got = f"{size} bytes" if size is not None else "more"
        raise TooLargeError(
            "body", f"must be at most {MAX_BODY_BYTES} bytes, got {got}; split the request"
        ) from None
    if not raw.strip() and not required:
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("body", "is not valid JSON") from None
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    return body


def _path_task_id(request: web.Request) -> UUID:
    """The task id in the path; a malformed one names no task (404)."""
    text = request.match_info["task_id"]
    try:
        return UUID(text)
    except ValueError:
        raise NotFoundError(f"task {text} not found") from None


def _int_query(request: web.Request, name: str, default: int) -> int:
    """An integer query parameter."""
    text = request.query.get(name, "")
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValidationError(name, f"must be an integer, got {text!r}") from None


def _task_filter(request: web.Request) -> TaskFilter:
    """The ``kind``, ``search`` and ``since`` (RFC 3339) query filters."""
    since = request.query.get("since") or None
    return TaskFilter(
        kind=request.query.get("kind") or None,
        search=request.query.get("search") or None,
        created_since=None if since is None else _instant(since, "since"),
    )


def _instant(text: str, name: str) -> datetime:
    """An RFC 3339 instant with an offset."""
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ValidationError(name, f"must be an RFC 3339 time with an offset, got {text!r}")
    return instant


def _run_state(text: str) -> RunState:
    """A run state named the model's way (``pending``) or the wire's (``RUN_STATE_PENDING``)."""
    name = text.strip().lower().removeprefix(PROTO_STATE_PREFIX.lower())
    try:
        return RunState(name)
    except ValueError:
        known = ", ".join(state.value for state in RunState)
        raise ValidationError("state", f"unknown run state {text!r}; one of: {known}") from None
