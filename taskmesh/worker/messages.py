"""The worker's side of the ``WorkerLink`` stream: assignments in, starts and results out.

Assignments are decoded into frozen ``Assignment`` values at the boundary and results leave as
``RunResult`` messages; nothing else in the worker handles raw region messages. Run ids stay
wire text: the worker only echoes them back, it never looks them up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from taskmesh import __version__
from taskmesh.common.daemon_logging import run_fields
from taskmesh.common.model import Executor, RunState
from taskmesh.common.rpc import region_pb2
from taskmesh.common.rpc.values import EXECUTORS, RUN_STATES, duration, member, timestamp
from taskmesh.worker.executor import Execution

# gRPC refuses messages over 4 MiB by default; output tails make results large, so a batch of
# results is split well below that.
RESULTS_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True, order=True)
class RunKey:
    """One run attempt as the region named it: run id and the epoch it was assigned under."""

    run_id: str
    epoch: int

    def __str__(self) -> str:
        return f"{self.run_id}@{self.epoch}"

    @classmethod
    def of(cls, ref: region_pb2.RunRef) -> RunKey:
        """The key of a RunRef message."""
        return cls(ref.run_id, ref.epoch)

    def to_proto(self) -> region_pb2.RunRef:
        """The RunRef message of this key."""
        return region_pb2.RunRef(run_id=self.run_id, epoch=self.epoch)


@dataclass(frozen=True, slots=True)
class Assignment:
    """One run the region gave this worker: what to execute and how to name it in reports."""

    key: RunKey
    task_id: str
    task_name: str
    attempt: int
    execution: Execution
    kind: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)

    def log_fields(self) -> dict[str, object]:
        """The structured fields of a log line about this run."""
        return run_fields(self.key.run_id, self.task_id, epoch=self.key.epoch)

    def __str__(self) -> str:
        """How log lines name the run: run id, epoch, task id and name, attempt."""
        task = f"task {self.task_id}" + (f" ({self.task_name})" if self.task_name else "")
        return f"run {self.key} of {task}, attempt {self.attempt}"


@dataclass(frozen=True, slots=True)
class Result:
    """How one assigned run ended on this worker; kept in the outbox until the region acks it."""

    key: RunKey
    task_id: str
    state: RunState
    finished_at: datetime
    started_at: datetime | None = None  # None: no process ever ran
    exit_code: int | None = None
    output_tail: str = ""
    error: str = ""
    refused_by_policy: bool = False  # the pool's policy refused it: never to be requeued

    def to_proto(self) -> region_pb2.RunResult:
        """The RunResult message of this result."""
        return region_pb2.RunResult(
            run=self.key.to_proto(),
            state=RUN_STATES[self.state],
            exit_code=self.exit_code,
            output_tail=self.output_tail,
            error=self.error,
            started_at=timestamp(self.started_at),
            finished_at=timestamp(self.finished_at),
            refused_by_policy=self.refused_by_policy,
        )


def decode_assignment(message: region_pb2.Assignment) -> Assignment:
    """The Assignment of a message; ``ValidationError`` names a field the worker cannot use."""
    executor = member(EXECUTORS, message.executor, "executor", Executor.SHELL)
    timeout = message.timeout.ToTimedelta() if message.HasField("timeout") else None
    execution = Execution(executor, message.command, tuple(message.args), _bound(timeout))
    return Assignment(
        key=RunKey.of(message.run),
        task_id=message.task_id,
        task_name=message.task_name,
        attempt=message.attempt,
        execution=execution,
        kind=message.kind,
        labels=dict(message.labels),
    )


def _bound(timeout: timedelta | None) -> timedelta | None:
    """A zero or negative timeout on the wire means no bound, like an unset one."""
    return timeout if timeout is not None and timeout > timedelta(0) else None


def register_message(
    worker_id: str,
    slots: int,
    labels: Mapping[str, str],
    executors: Iterable[Executor],
    running: Iterable[RunKey],
) -> region_pb2.WorkerMessage:
    """The first message of every stream."""
    register = region_pb2.RegisterWorker(
        worker_id=worker_id,
        slots=slots,
        labels=labels,
        executors=[EXECUTORS[executor] for executor in executors],
        running=[key.to_proto() for key in running],
        version=__version__,
    )
    return region_pb2.WorkerMessage(register=register)


def heartbeat_message(
    free_slots: int, running: Iterable[RunKey], outbox_size: int
) -> region_pb2.WorkerMessage:
    """A heartbeat: credit, what runs here now, how many results wait for an ack."""
    heartbeat = region_pb2.WorkerHeartbeat(
        free_slots=free_slots,
        running_run_ids=[key.run_id for key in running],
        outbox_size=outbox_size,
    )
    return region_pb2.WorkerMessage(heartbeat=heartbeat)


def started_message(starts: Sequence[tuple[RunKey, datetime]]) -> region_pb2.WorkerMessage:
    """One batch of process starts, in the order they happened."""
    runs = [
        region_pb2.RunStarted(run=key.to_proto(), started_at=timestamp(at)) for key, at in starts
    ]
    return region_pb2.WorkerMessage(started=region_pb2.RunsStarted(runs=runs))


def results_messages(
    results: Iterable[Result], batch_bytes: int = RESULTS_BATCH_BYTES
) -> Iterator[region_pb2.WorkerMessage]:
    """Results, oldest first, in batches of at most ``batch_bytes`` (at least one per batch)."""
    batch: list[region_pb2.RunResult] = []
    size = 0
    for result in results:
        message = result.to_proto()
        if batch and size + message.ByteSize() > batch_bytes:
            yield _results_message(batch)
            batch, size = [], 0
        batch.append(message)
        size += message.ByteSize()
    if batch:
        yield _results_message(batch)


def _results_message(batch: list[region_pb2.RunResult]) -> region_pb2.WorkerMessage:
    return region_pb2.WorkerMessage(results=region_pb2.RunResults(results=batch))


def draining_message(reason: str, grace: timedelta) -> region_pb2.WorkerMessage:
    """The announcement that this worker takes no more work and will close its stream."""
    draining = region_pb2.WorkerDraining(reason=reason, grace=duration(grace))
    return region_pb2.WorkerMessage(draining=draining)
