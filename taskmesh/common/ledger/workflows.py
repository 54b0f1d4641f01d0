"""Submitting a workflow: the workflow and every task of it, in the caller's one transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from uuid import UUID

from sqlalchemy.ext.asyncio import AsyncConnection

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.ledger.submission import (
    create_workflow,
    is_plain,
    submit_plain_tasks,
    submit_task,
)
from taskmesh.common.model import Run, SubmittedWorkflow, Task, TaskSpec, WorkflowTask
from taskmesh.common.task_graph import topological_order


async def submit_workflow(
    connection: AsyncConnection, name: str, items: Sequence[WorkflowTask], now: datetime
) -> SubmittedWorkflow:
    """Store a workflow and its tasks, each after the tasks it depends on.

    A refused task raises ``ValidationError`` naming it as ``tasks[i]``; the caller's
    transaction then rolls back, so nothing of the workflow is written.
    """
    order = _storing_order(items)
    workflow_id = await create_workflow(connection, name, now)
    # Independent tasks are stored in bulk first (nothing can depend on an unstored task);
    # the rest one by one, each after its dependencies.
    plain = [
        index for index in order if is_plain(items[index].spec) and not items[index].depends_on
    ]
    bulk = await submit_plain_tasks(connection, [items[i].spec for i in plain], now, workflow_id)
    stored = {items[index].local_name: pair for index, pair in zip(plain, bulk, strict=True)}
    for index in order:
        item = items[index]
        if item.local_name in stored:
            continue
        local = tuple(stored[dependency][0].id for dependency in item.depends_on)
        spec = replace(item.spec, dependencies=(*item.spec.dependencies, *local))
        stored[item.local_name] = await _submit_member(connection, index, spec, now, workflow_id)
    return SubmittedWorkflow(
        workflow_id, {item.local_name: stored[item.local_name] for item in items}
    )


def _storing_order(items: Sequence[WorkflowTask]) -> list[int]:
    """Positions of ``items``, dependencies first; ``ValidationError`` if they form no DAG."""
    positions = {item.local_name: index for index, item in enumerate(items)}
    if len(positions) != len(items):
        raise ValidationError("tasks", "local names must be unique within a workflow")
    for index, item in enumerate(items):
        for number, dependency in enumerate(item.depends_on):
            if dependency not in positions:
                field = f"tasks[{index}].depends_on[{number}]"
                raise ValidationError(field, f'no task of this workflow is named "{dependency}"')
    try:
        order = topological_order({item.local_name: item.depends_on for item in items})
    except ValueError as error:
        raise ValidationError("tasks", str(error)) from None
    return [positions[name] for name in order]


async def _submit_member(
    connection: AsyncConnection, index: int, spec: TaskSpec, now: datetime, workflow_id: UUID
) -> tuple[Task, Run | None]:
    """Submit the task at ``index``; its refusal names it by that index."""
    try:
        task, run, _ = await submit_task(connection, spec, now, workflow_id)
    except NotFoundError as error:  # only a dependency can be missing
        raise ValidationError(f"tasks[{index}].spec.dependencies", str(error)) from None
    except ValidationError as error:
        raise ValidationError(f"tasks[{index}].spec.{error.field}", error.message) from None
    return task, run
