"""The SSE framing of the dashboard's event stream, byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest

from taskmesh.common.model import RunEvent, RunState
from taskmesh.master.dashboard.event_stream import batch_message, sse_message

TASK = UUID("00000000-0000-4000-8000-000000000001")
RUN = UUID("00000000-0000-4000-8000-000000000002")


def event(event_id: int, state: RunState) -> RunEvent:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    return RunEvent(event_id, at, RUN, TASK, 1, None, state, 1, region="eu")


def test_a_message_is_id_event_data_and_a_blank_line() -> None:
    assert sse_message("runs", 7, '{"a": 1}') == b'id: 7\nevent: runs\ndata: {"a": 1}\n\n'


def test_data_with_a_line_break_is_refused() -> None:
    with pytest.raises(ValueError, match="one line"):
        sse_message("runs", 1, "two\nlines")


def test_a_batch_is_one_message_carrying_its_last_event_id() -> None:
    frame = batch_message([event(41, RunState.PENDING), event(42, RunState.DELEGATED)])
    head, data = frame.decode().removesuffix("\n\n").rsplit("\n", 1)
    assert head == "id: 42\nevent: runs"
    events = json.loads(data.removeprefix("data: "))["events"]
    assert [e["to_state"] for e in events] == ["RUN_STATE_PENDING", "RUN_STATE_DELEGATED"]
    assert events[0]["task_id"] == str(TASK)


def test_an_empty_batch_is_a_keep_alive_comment() -> None:
    assert batch_message([]) == b": keep-alive\n\n"
