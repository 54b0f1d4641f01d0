"""Semantic checks of a submitted workflow, before anything is written.

Local names are unique and non-empty, every ``depends_on`` names a task of the same request,
the dependencies form a DAG (a cycle is named in full), and each spec passes the checks of a
single submit, its field paths prefixed ``tasks[i].spec.``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import WorkflowTask
from taskmesh.common.task_graph import find_cycle
from taskmesh.common.topology import Topology
from taskmesh.master.validation import MAX_NAME, check_dependency_count, validated_spec

MAX_WORKFLOW_TASKS = 10_000


def validated_workflow(items: Sequence[WorkflowTask], topology: Topology) -> list[WorkflowTask]:
    """``items`` with their specs' defaults filled in, or a ``ValidationError`` naming the field."""
    if not items:
        raise ValidationError("tasks", "a workflow needs at least one task")
    if len(items) > MAX_WORKFLOW_TASKS:
        raise ValidationError("tasks", f"at most {MAX_WORKFLOW_TASKS} tasks, got {len(items)}")
    _check_local_names(items)
    _check_depends_on(items)
    _check_acyclic(items)
    return [_validated_item(index, item, topology) for index, item in enumerate(items)]


def _check_local_names(items: Sequence[WorkflowTask]) -> None:
    """Each local name present, bounded and used once."""
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        field = f"tasks[{index}].local_name"
        if not item.local_name:
            raise ValidationError(field, "must not be empty: depends_on refers to tasks by it")
        if len(item.local_name) > MAX_NAME:
            raise ValidationError(field, f"must be at most {MAX_NAME} characters")
        if item.local_name in first:
            message = f'"{item.local_name}" is already the name of tasks[{first[item.local_name]}]'
            raise ValidationError(field, message)
        first[item.local_name] = index


def _check_depends_on(items: Sequence[WorkflowTask]) -> None:
    """Each dependency a local name of this request, listed once."""
    names = {item.local_name for item in items}
    for index, item in enumerate(items):
        check_dependency_count(len(item.depends_on), f"tasks[{index}].depends_on")
        seen: set[str] = set()
        for number, dependency in enumerate(item.depends_on):
            field = f"tasks[{index}].depends_on[{number}]"
            if dependency not in names:
                known = ", ".join(sorted(names))
                message = (
                    f'no task of this workflow is named "{dependency}"; the names are: {known}'
                )
                raise ValidationError(field, message)
            if dependency in seen:
                raise ValidationError(field, f'"{dependency}" is listed twice')
            seen.add(dependency)


def _check_acyclic(items: Sequence[WorkflowTask]) -> None:
    """No task waits, directly or through others, for itself."""
    cycle = find_cycle({item.local_name: item.depends_on for item in items})
    if cycle is None:
        return
    index = next(i for i, item in enumerate(items) if item.local_name == cycle[0])
    number = items[index].depends_on.index(cycle[1])
    message = f"dependencies must not form a cycle: {' -> '.join(cycle)}"
    raise ValidationError(f"tasks[{index}].depends_on[{number}]", message)


def _validated_item(index: int, item: WorkflowTask, topology: Topology) -> WorkflowTask:
    """One task's spec checked like a single submit's."""
    try:
        spec = validated_spec(item.spec, topology)
    except ValidationError as error:
        raise ValidationError(f"tasks[{index}].spec.{error.field}", error.message) from None
    return replace(item, spec=spec)
