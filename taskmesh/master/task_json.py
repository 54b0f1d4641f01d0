"""Tasks and runs as REST JSON: the protobuf JSON mapping of the wire messages.

A REST body is a ``TaskSpec`` in proto3 JSON (RFC 3339 instants, ``"30s"`` durations), so REST
and gRPC accept exactly the same tasks. Enum values may also be written the short way
(``"exec"`` for ``EXECUTOR_EXEC``, ``"failed"`` for ``RUN_STATE_FAILED``).
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import Message

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import (
    Run,
    RunEvent,
    ScheduledTask,
    Task,
    TaskSpec,
    TaskStatus,
    WorkflowTask,
)
from taskmesh.common.rpc import task_pb2
from taskmesh.common.rpc.runs import run_event_to_proto, run_to_proto
from taskmesh.common.rpc.tasks import (
    scheduled_task_to_proto,
    task_spec_from_proto,
    task_status_to_proto,
    task_to_proto,
)

JsonObject = dict[str, Any]
UNSPECIFIED = "UNSPECIFIED"
# A workflow task's spec fields sit in the task object itself in a JSON (or YAML) body.
SPEC_PATH = re.compile(r"^(tasks\[\d+\])\.spec\.")


def spec_from_json(body: object) -> TaskSpec:
    """The task spec of a JSON body; ``ValidationError`` names the first bad field."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object with the TaskSpec fields")
    message = task_pb2.TaskSpec()
    fields = _fields(message.DESCRIPTOR)
    for key, value in body.items():
        field = fields.get(key)
        if field is None:
            known = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
            raise ValidationError(key, f"unknown field; TaskSpec has: {known}")
        try:
            json_format.ParseDict({key: _long_enums(field, value)}, message)
        except json_format.ParseError as error:
            raise ValidationError(field.name, _reason(error, field.name)) from None
    return task_spec_from_proto(message)


def workflow_from_json(body: JsonObject) -> tuple[str, list[WorkflowTask]]:
    """The name and tasks of a ``POST /v1/workflows`` body.

    Each task is a TaskSpec object plus ``depends_on`` (local names) and ``local_name``, which
    defaults to the task's ``name``. A bad field is named ``tasks[i].<field>``.
    """
    name = body.get("name", "")
    if not isinstance(name, str):
        raise ValidationError("name", "must be a string")
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise ValidationError("tasks", "must be a list of task objects")
    return name, [_workflow_task(index, item) for index, item in enumerate(tasks)]


def workflow_field(field: str) -> str:
    """A workflow error's field path as a body spells it: ``tasks[3].spec.x`` is ``tasks[3].x``."""
    return SPEC_PATH.sub(r"\1.", field)


def _workflow_task(index: int, item: object) -> WorkflowTask:
    """One task object of a workflow body."""
    prefix = f"tasks[{index}]"
    if not isinstance(item, dict):
        raise ValidationError(prefix, "must be a JSON object with the TaskSpec fields")
    fields = dict(item)
    local_name = fields.pop("local_name", fields.get("name", ""))
    if not isinstance(local_name, str):
        raise ValidationError(f"{prefix}.local_name", "must be a string")
    depends_on = fields.pop("depends_on", [])
    if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
        raise ValidationError(f"{prefix}.depends_on", "must be a list of local names")
    try:
        spec = spec_from_json(fields)
    except ValidationError as error:
        raise ValidationError(f"{prefix}.{error.field}", error.message) from None
    return WorkflowTask(local_name, spec, tuple(depends_on))


def task_json(task: Task) -> JsonObject:
    """A stored task as JSON."""
    return _json(task_to_proto(task))


def run_json(run: Run) -> JsonObject:
    """A run attempt as JSON."""
    return _json(run_to_proto(run))


def task_status_json(status: TaskStatus) -> JsonObject:
    """A task with its latest run as JSON."""
    return _json(task_status_to_proto(status))


def scheduled_task_json(item: ScheduledTask) -> JsonObject:
    """A recurring task with its last and next fire times as JSON."""
    return _json(scheduled_task_to_proto(item))


def run_event_json(event: RunEvent) -> JsonObject:
    """One entry of the ledger's event log as JSON."""
    return _json(run_event_to_proto(event))


def message_json(message: Message) -> JsonObject:
    """Any wire message as JSON, the way every ``/v1`` body is written."""
    return _json(message)


def _json(message: Message) -> JsonObject:
    """A message in proto3 JSON with the ``.proto`` field names."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _fields(descriptor: Descriptor) -> dict[str, FieldDescriptor]:
    """A message's fields by ``.proto`` name and by JSON (camelCase) name."""
    fields = dict(descriptor.fields_by_name)
    fields.update({field.json_name: field for field in descriptor.fields})
    return fields


def _long_enums(field: FieldDescriptor, value: Any) -> Any:
    """``value`` with short enum names (``"exec"``) spelled out (``"EXECUTOR_EXEC"``)."""
    if field.enum_type is not None:
        if isinstance(value, list):
            return [_long_enum(field.enum_type, item) for item in value]
        return _long_enum(field.enum_type, value)
    message = field.message_type
    if message is None or message.GetOptions().map_entry or not isinstance(value, dict):
        return value
    fields = _fields(message)
    return {
        key: _long_enums(fields[key], item) if key in fields else item
        for key, item in value.items()
    }


def _long_enum(enum: EnumDescriptor, value: Any) -> Any:
    """The full name of a short enum value, or the value unchanged."""
    if not isinstance(value, str):
        return value
    prefix = enum.values[0].name.removesuffix(UNSPECIFIED)
    long_name = prefix + value.upper()
    if value not in enum.values_by_name and long_name in enum.values_by_name:
        return long_name
    return value


def _reason(error: json_format.ParseError, name: str) -> str:
    """The parser's message without its ``Failed to parse X field:`` preamble."""
    return str(error).removeprefix(f"Failed to parse {name} field: ").strip()
