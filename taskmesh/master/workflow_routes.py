"""``GET /v1/workflows`` and ``GET /v1/workflows/{id}``: stored workflows and one as a graph.

A graph answer is the workflow, its tasks each with the latest run (the ``GET /v1/tasks`` item
shape) and its edges ``{"from": dependency, "to": dependent}`` inside the workflow; the
dashboard lays it out and recolours nodes from the event stream.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aiohttp import web

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.model import Workflow
from taskmesh.master.dashboard.overview import instant_json
from taskmesh.master.task_api import TaskApi
from taskmesh.master.task_json import task_status_json


def workflow_json(workflow: Workflow) -> dict[str, Any]:
    """A workflow's own fields."""
    return {
        "id": str(workflow.id),
        "name": workflow.name,
        "created_at": instant_json(workflow.created_at),
        "task_count": workflow.task_count,
    }


class WorkflowRoutes:
    """The workflow read routes over a ``TaskApi`` (submission is ``POST /v1/workflows``)."""

    def __init__(self, api: TaskApi) -> None:
        """Read from ``api``."""
        self._api = api

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Add the routes."""
        router.add_get("/v1/workflows", self.list_workflows)
        router.add_get("/v1/workflows/{workflow_id}", self.get_workflow)

    async def list_workflows(self, request: web.Request) -> web.Response:
        """The newest workflows first (``limit``, default 100)."""
        text = request.query.get("limit", "") or "0"
        if not text.isdigit():
            raise ValidationError("limit", f"must be a non-negative integer, got {text!r}")
        workflows = await self._api.list_workflows(int(text))
        return web.json_response({"workflows": [workflow_json(item) for item in workflows]})

    async def get_workflow(self, request: web.Request) -> web.Response:
        """One workflow: its tasks with their latest runs, and its edges."""
        text = request.match_info["workflow_id"]
        try:
            workflow_id = UUID(text)
        except ValueError:
            raise NotFoundError(f"workflow {text} not found") from None
        graph = await self._api.workflow_graph(workflow_id)
        return web.json_response(
            {
                "workflow": workflow_json(graph.workflow),
                "tasks": [task_status_json(status) for status in graph.nodes],
                "edges": [{"from": str(a), "to": str(b)} for a, b in graph.edges],
            }
        )
