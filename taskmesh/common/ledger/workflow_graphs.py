"""Reading workflows back: the list of workflows, and one workflow's tasks as a graph."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import NotFoundError
from taskmesh.common.ledger.reads import status_from_row, task_select, with_latest_run
from taskmesh.common.ledger.rows import as_uuid
from taskmesh.common.ledger.schema import tasks, workflows
from taskmesh.common.model import Workflow, WorkflowGraph


def _workflow_select() -> Any:
    """Every column of ``workflows`` plus how many tasks each holds."""
    count = (
        select(func.count())
        .select_from(tasks)
        .where(tasks.c.workflow_id == workflows.c.id)
        .scalar_subquery()
    )
    return select(workflows, count.label("task_count"))


def _workflow(row: Any) -> Workflow:
    """A ``Workflow`` from a ``_workflow_select`` row."""
    return Workflow(as_uuid(row["id"]), row["name"], row["created_at"], int(row["task_count"]))


async def list_workflows(connection: AsyncConnection, limit: int) -> list[Workflow]:
    """The newest workflows first, at most ``limit``."""
    query = (
        _workflow_select()
        .order_by(workflows.c.created_at.desc(), workflows.c.id.desc())
        .limit(limit)
    )
    return [_workflow(row) for row in (await connection.execute(query)).mappings()]


async def workflow_graph(connection: AsyncConnection, workflow_id: UUID) -> WorkflowGraph:
    """A workflow's tasks (by creation, then id), each with its latest attempt."""
    found = await connection.execute(_workflow_select().where(workflows.c.id == workflow_id))
    row = found.mappings().first()
    if row is None:
        raise NotFoundError(f"workflow {workflow_id} not found")
    query, _ = with_latest_run(task_select().where(tasks.c.workflow_id == workflow_id))
    query = query.order_by(tasks.c.created_at, tasks.c.id)
    nodes = [status_from_row(task_row) for task_row in (await connection.execute(query)).mappings()]
    return WorkflowGraph(_workflow(row), tuple(nodes))
