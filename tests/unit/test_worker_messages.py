"""The worker's wire boundary: assignments decoded, results and batches encoded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import Executor, RunState
from taskmesh.common.rpc import region_pb2, run_pb2, task_pb2
from taskmesh.worker.messages import (
    Result,
    RunKey,
    decode_assignment,
    draining_message,
    heartbeat_message,
    register_message,
    results_messages,
    started_message,
)

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def assignment(**fields: object) -> region_pb2.Assignment:
    message = region_pb2.Assignment(
        run=region_pb2.RunRef(run_id="r1", epoch=4),
        task_id="t1",
        task_name="backup",
        attempt=2,
        command="/bin/echo",
        args=["a", "b"],
        kind="io",
        labels={"team": "x"},
    )
    for name, value in fields.items():
        setattr(message, name, value)
    return message


def test_an_assignment_decodes_to_an_execution() -> None:
    message = assignment(executor=task_pb2.EXECUTOR_EXEC)
    message.timeout.FromTimedelta(timedelta(seconds=30))
    decoded = decode_assignment(message)
    assert decoded.key == RunKey("r1", 4)
    assert (decoded.task_id, decoded.task_name, decoded.attempt) == ("t1", "backup", 2)
    assert decoded.execution.executor is Executor.EXEC
    assert decoded.execution.command == "/bin/echo"
    assert decoded.execution.args == ("a", "b")
    assert decoded.execution.timeout == timedelta(seconds=30)
    assert (decoded.kind, dict(decoded.labels)) == ("io", {"team": "x"})
    assert str(decoded) == "run r1@4 of task t1 (backup), attempt 2"


def test_an_unset_executor_is_shell_and_an_unset_or_zero_timeout_is_unbounded() -> None:
    decoded = decode_assignment(assignment())
    assert decoded.execution.executor is Executor.SHELL
    assert decoded.execution.timeout is None
    zero = assignment()
    zero.timeout.FromTimedelta(timedelta(0))
    assert decode_assignment(zero).execution.timeout is None


def test_an_unknown_executor_is_a_validation_error_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="executor"):
        decode_assignment(assignment(executor=99))


def test_a_result_encodes_every_field_and_leaves_unknowns_unset() -> None:
    full = Result(RunKey("r1", 4), "t1", RunState.FAILED, NOW, NOW, 3, "out", "exited")
    message = full.to_proto()
    assert message.run == region_pb2.RunRef(run_id="r1", epoch=4)
    assert message.state == run_pb2.RUN_STATE_FAILED
    assert (message.exit_code, message.output_tail, message.error) == (3, "out", "exited")
    assert message.started_at.ToDatetime(tzinfo=UTC) == NOW
    bare = Result(RunKey("r1", 4), "t1", RunState.CANCELLED, NOW).to_proto()
    assert not bare.HasField("exit_code")
    assert not bare.HasField("started_at")
    assert bare.HasField("finished_at")


def test_results_are_batched_below_the_byte_bound_oldest_first() -> None:
    results = [
        Result(RunKey(f"r{i}", 1), "t", RunState.SUCCEEDED, NOW, output_tail="x" * 400)
        for i in range(10)
    ]
    batches = list(results_messages(results, batch_bytes=1000))
    assert [len(b.results.results) for b in batches] == [2, 2, 2, 2, 2]
    run_ids = [r.run.run_id for b in batches for r in b.results.results]
    assert run_ids == [f"r{i}" for i in range(10)]
    huge = [Result(RunKey("big", 1), "t", RunState.SUCCEEDED, NOW, output_tail="y" * 5000)]
    assert len(list(results_messages(huge, batch_bytes=1000))) == 1
    assert list(results_messages([])) == []


def test_worker_messages_carry_what_the_region_needs() -> None:
    register = register_message("w", 3, {"zone": "a"}, [Executor.NOOP], [RunKey("r", 2)])
    assert register.register.slots == 3
    assert list(register.register.executors) == [task_pb2.EXECUTOR_NOOP]
    assert list(register.register.running) == [region_pb2.RunRef(run_id="r", epoch=2)]
    heartbeat = heartbeat_message(1, [RunKey("r", 2)], 5).heartbeat
    assert (heartbeat.free_slots, list(heartbeat.running_run_ids), heartbeat.outbox_size) == (
        1,
        ["r"],
        5,
    )
    started = started_message([(RunKey("r", 2), NOW)]).started.runs
    assert started[0].started_at.ToDatetime(tzinfo=UTC) == NOW
    draining = draining_message("SIGTERM", timedelta(seconds=30)).draining
    assert (draining.reason, draining.grace.ToTimedelta()) == ("SIGTERM", timedelta(seconds=30))
