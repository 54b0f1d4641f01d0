"""Wire forms of the model's scalar values: instants, spans, ids, enums and free-form details.

The building blocks of ``tasks`` and ``runs``. Decoding is where wire input enters the model:
malformed ids and unknown enum values raise ``ValidationError`` naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TypeVar, overload
from uuid import UUID

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.struct_pb2 import Struct
from google.protobuf.timestamp_pb2 import Timestamp

from taskmesh.common import model
from taskmesh.common.errors import ValidationError
from taskmesh.common.rpc import cluster_pb2, run_pb2, task_pb2

_Member = TypeVar("_Member")
_Wire = TypeVar("_Wire", bound=int)

# Model member NAME <-> proto value PREFIX_NAME; a unit test keeps both sides complete.
RUN_STATES = {s: run_pb2.RunState.Value(f"RUN_STATE_{s.name}") for s in model.RunState}
EXECUTORS = {e: task_pb2.Executor.Value(f"EXECUTOR_{e.name}") for e in model.Executor}
PLACEMENTS = {p: task_pb2.Placement.Value(f"PLACEMENT_{p.name}") for p in model.Placement}
MISFIRE_POLICIES = {
    m: task_pb2.MisfirePolicy.Value(f"MISFIRE_POLICY_{m.name}") for m in model.MisfirePolicy
}
OVERLAP_POLICIES = {
    o: task_pb2.OverlapPolicy.Value(f"OVERLAP_POLICY_{o.name}") for o in model.OverlapPolicy
}
REGION_STATES = {
    s: cluster_pb2.RegionState.Value(f"REGION_STATE_{s.name}") for s in model.RegionState
}
WORKER_STATES = {
    s: cluster_pb2.WorkerState.Value(f"WORKER_STATE_{s.name}") for s in model.WorkerState
}


def member(
    table: Mapping[_Member, _Wire], value: int, field: str, default: _Member | None = None
) -> _Member:
    """The model member of a proto enum value; ``default`` when unspecified (0), if it has one."""
    if value == 0 and default is not None:
        return default
    for candidate, wire in table.items():
        if wire == value:
            return candidate
    raise ValidationError(field, f"unknown or unspecified enum value {value}")


@overload
def timestamp(instant: datetime) -> Timestamp: ...
@overload
def timestamp(instant: None) -> None: ...
def timestamp(instant: datetime | None) -> Timestamp | None:
    """The Timestamp of a timezone-aware instant; None stays None (the field stays unset)."""
    if instant is None:
        return None
    if instant.tzinfo is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: the model holds aware instants")
    message = Timestamp()
    message.FromDatetime(instant)
    return message


def instant(message: Timestamp) -> datetime:
    """The aware UTC datetime of a Timestamp."""
    return message.ToDatetime(tzinfo=UTC)


@overload
def duration(span: timedelta) -> Duration: ...
@overload
def duration(span: None) -> None: ...
def duration(span: timedelta | None) -> Duration | None:
    """The Duration of a timedelta; None stays None (the field stays unset)."""
    if span is None:
        return None
    message = Duration()
    message.FromTimedelta(span)
    return message


def uuid(text: str, field: str) -> UUID:
    """A UUID parsed from wire text, or a ValidationError naming the field."""
    try:
        return UUID(text)
    except ValueError:
        raise ValidationError(field, f"{text!r} is not a UUID") from None


def uuids(texts: Iterable[str], field: str) -> tuple[UUID, ...]:
    """UUIDs parsed from wire texts, in order."""
    return tuple(uuid(text, field) for text in texts)


def struct(detail: Mapping[str, object]) -> Struct:
    """A Struct of free-form details: JSON values; numbers travel as doubles, others as text."""
    message = Struct()
    message.update(json.loads(json.dumps(detail, default=str)))
    return message


def details(message: Struct) -> dict[str, object]:
    """The JSON-like details of a Struct."""
    return json_format.MessageToDict(message)
