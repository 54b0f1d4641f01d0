"""The Python client: submit and follow tasks on a taskmesh master over gRPC.

    from taskmesh.client import Client

    with Client("127.0.0.1:50051") as client:
        task = client.submit("echo hello", name="hello")
        info = client.wait(task.id, timeout=30)
        print(info.latest_run.state, info.latest_run.output_tail)

Every failure is a ``taskmesh.common.errors.TaskmeshError``: ``ValidationError`` (with the
offending ``field``), ``NotFoundError``, ``ConflictError``, ``OverloadedError`` (with
``retry_after``), ``UnavailableError`` when the master cannot be reached,
``UnauthenticatedError`` when the master requires a token (``Client(address, token=...)``)
and none or a wrong one was given, ``TooLargeError`` for a request over the message limit.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Self, TypeVar
from uuid import UUID

import grpc
from google.protobuf.message import Message

from taskmesh.common import model
from taskmesh.common.errors import TooLargeError, UnavailableError, ValidationError
from taskmesh.common.rpc import cluster_pb2, scheduler_pb2, scheduler_pb2_grpc
from taskmesh.common.rpc.cluster import region_from_proto
from taskmesh.common.rpc.limits import MAX_MESSAGE_BYTES, message_size_options
from taskmesh.common.rpc.runs import run_event_from_proto, run_from_proto
from taskmesh.common.rpc.status import error_from_rpc
from taskmesh.common.rpc.tasks import (
    scheduled_task_from_proto,
    task_from_proto,
    task_spec_to_proto,
    task_status_from_proto,
)
from taskmesh.common.rpc.values import RUN_STATES

_Request = TypeVar("_Request", bound=Message)
_Response = TypeVar("_Response")


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer to a submission: the task, its first run, and whether it already existed."""

    task: model.Task
    first_run: model.Run | None
    deduplicated: bool


@dataclass(frozen=True, slots=True)
class SubmittedWorkflow:
    """The answer to a workflow submission: its id and each stored task by local name."""

    workflow_id: UUID
    tasks: Mapping[str, model.Task]


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A task with its runs, newest attempt first."""

    task: model.Task
    runs: tuple[model.Run, ...] = field(default=())

    @property
    def latest_run(self) -> model.Run | None:
        """The newest attempt, or None while a schedule has produced no run."""
        return self.runs[0] if self.runs else None

    @property
    def finished(self) -> bool:
        """True when the newest attempt is terminal (a retry would be a newer attempt)."""
        latest = self.latest_run
        return latest is not None and latest.state.is_terminal


@dataclass(frozen=True)
class EventWatch:
    """Which events ``Client.watch`` follows; filters combine with AND, empty matches all."""

    task_id: UUID | str | None = None
    workflow_id: UUID | str | None = None
    run_id: UUID | str | None = None
    region: str | None = None
    states: frozenset[model.RunState] = frozenset()
    after_id: int = 0  # replay the log after this event id first; 0 = new events only

    def request(self) -> scheduler_pb2.WatchEventsRequest:
        """The ``WatchEvents`` request of this watch."""
        return scheduler_pb2.WatchEventsRequest(
            task_id=_text(self.task_id),
            workflow_id=_text(self.workflow_id),
            run_id=_text(self.run_id),
            region=self.region,
            states=[RUN_STATES[state] for state in sorted(self.states)],
            after_id=self.after_id,
        )


class Client:
    """A synchronous client of the master's ``Scheduler`` service."""

    def __init__(self, address: str, *, timeout: float = 10.0, token: str | None = None) -> None:
        """A client of the master at ``address``; ``token`` is sent as a bearer token."""
        self.address = address
        self.timeout = timeout
        self._metadata = () if token is None else (("authorization", f"Bearer {token}"),)
        self._channel = grpc.insecure_channel(address, options=message_size_options())
        self._stub = scheduler_pb2_grpc.SchedulerStub(self._channel)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; the client cannot be used afterwards."""
        self._channel.close()

    def submit(
        self,
        command: str,
        *,
        name: str | None = None,
        executor: model.Executor = model.Executor.SHELL,
        args: Sequence[str] = (),
        at: datetime | None = None,
        cron: str | None = None,
        timezone: str = "UTC",
        every: timedelta | None = None,
        misfire: model.MisfirePolicy = model.MisfirePolicy.LATEST,
        overlap: model.OverlapPolicy = model.OverlapPolicy.ALLOW,
        priority: int = model.DEFAULT_PRIORITY,
        region: str | None = None,
        placement: model.Placement = model.Placement.STRICT,
        kind: str = model.DEFAULT_KIND,
        timeout: timedelta | None = None,
        schedule_to_start_timeout: timedelta | None = None,
        dependencies: Iterable[UUID] = (),
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
        description: str = "",
    ) -> model.Task:
        """Submit a command; returns the stored task (the first one for a repeated key).

        At most one of ``at``, ``cron`` (in ``timezone``) and ``every`` (an interval from now);
        ``misfire`` and ``overlap`` apply to the recurring ones.
        """
        schedule = _schedule(at, cron, timezone, every, misfire=misfire, overlap=overlap)
        spec = model.TaskSpec(
            name=name or _default_name(command),
            command=command,
            executor=executor,
            args=tuple(args),
            description=description,
            schedule=schedule,
            priority=priority,
            region=region,
            placement=placement,
            kind=kind,
            timeout=timeout,
            schedule_to_start_timeout=schedule_to_start_timeout,
            dependencies=tuple(dependencies),
            idempotency_key=idempotency_key,
            labels=dict(labels or {}),
        )
        return self.submit_spec(spec).task

    def submit_spec(self, spec: model.TaskSpec) -> Submitted:
        """Submit a full task definition."""
        request = scheduler_pb2.SubmitRequest(spec=task_spec_to_proto(spec))
        response = self._call(self._stub.Submit, request)
        first_run = run_from_proto(response.first_run) if response.HasField("first_run") else None
        return Submitted(task_from_proto(response.task), first_run, response.deduplicated)

    def submit_workflow(
        self, tasks: Sequence[model.WorkflowTask], name: str = ""
    ) -> SubmittedWorkflow:
        """Submit tasks that depend on each other by local name, all or nothing."""
        request = scheduler_pb2.SubmitWorkflowRequest(
            name=name,
            tasks=[
                scheduler_pb2.WorkflowTask(
                    local_name=task.local_name,
                    spec=task_spec_to_proto(task.spec),
                    depends_on=task.depends_on,
                )
                for task in tasks
            ],
        )
        response = self._call(self._stub.SubmitWorkflow, request)
        stored = [task_from_proto(task) for task in response.tasks]
        local_names = [task.local_name for task in tasks]
        return SubmittedWorkflow(
            UUID(response.workflow_id), dict(zip(local_names, stored, strict=True))
        )

    def get(self, task_id: UUID | str, *, run_limit: int = 20) -> TaskInfo:
        """A task and its newest runs."""
        request = scheduler_pb2.GetTaskRequest(task_id=str(task_id), run_limit=run_limit)
        response = self._call(self._stub.GetTask, request)
        runs = tuple(run_from_proto(run) for run in response.runs)
        return TaskInfo(task_from_proto(response.task), runs)

    def list(
        self,
        *,
        states: Iterable[model.RunState] = (),
        region: str | None = None,
        limit: int = 100,
    ) -> builtins.list[model.TaskStatus]:
        """Tasks with their latest run, newest first, filtered by run state and region."""
        request = scheduler_pb2.ListTasksRequest(
            states=[RUN_STATES[state] for state in states], region=region, limit=limit
        )
        response = self._call(self._stub.ListTasks, request)
        return [task_status_from_proto(status) for status in response.tasks]

    def cancel(self, task_id: UUID | str, reason: str = "") -> builtins.list[str]:
        """Cancel a task's unfinished runs; returns the cancelled run ids."""
        request = scheduler_pb2.CancelRequest(task_id=str(task_id), reason=reason)
        return list(self._call(self._stub.Cancel, request).cancelled_run_ids)

    def set_priority(self, task_id: UUID | str, priority: int) -> builtins.list[str]:
        """Change the priority of a task's waiting runs; returns the affected run ids."""
        request = scheduler_pb2.SetPriorityRequest(task_id=str(task_id), priority=priority)
        return list(self._call(self._stub.SetPriority, request).run_ids)

    def pause(self, task_id: UUID | str) -> model.Task:
        """Pause a cron or interval task's schedule; returns the task (now paused)."""
        request = scheduler_pb2.PauseScheduleRequest(task_id=str(task_id))
        return task_from_proto(self._call(self._stub.PauseSchedule, request).task)

    def resume(self, task_id: UUID | str) -> model.Task:
        """Resume a paused schedule; missed fires follow its misfire policy."""
        request = scheduler_pb2.ResumeScheduleRequest(task_id=str(task_id))
        return task_from_proto(self._call(self._stub.ResumeSchedule, request).task)

    def schedules(self, *, next_fires: int = 5) -> builtins.list[model.ScheduledTask]:
        """Every recurring task with its next ``next_fires`` fire times (none while paused)."""
        request = scheduler_pb2.ListSchedulesRequest(next=next_fires)
        response = self._call(self._stub.ListSchedules, request)
        return [scheduled_task_from_proto(item) for item in response.schedules]

    def retry(self, task_id: UUID | str) -> model.RetriedTask:
        """One more attempt for a task whose latest run failed, timed out, was cancelled, lost
        or upstream_failed; ``ConflictError`` for a succeeded or still active task."""
        response = self._call(self._stub.Retry, scheduler_pb2.RetryRequest(task_id=str(task_id)))
        run = run_from_proto(response.run)
        requeued = tuple(run_from_proto(item) for item in response.requeued)
        return model.RetriedTask(run.task_id, run, requeued)

    def regions(self) -> builtins.list[model.Region]:
        """Every region as the master sees it."""
        response = self._call(self._stub.GetCluster, scheduler_pb2.GetClusterRequest())
        return [region_from_proto(region) for region in response.regions]

    def watch(
        self, events: EventWatch | None = None
    ) -> Generator[builtins.list[model.RunEvent], None, None]:
        """Batches of run events as they are recorded, until the caller stops iterating.

        Batches come in the order their transactions committed; an empty batch is the
        master's keep-alive. Closing the generator (or the client) ends the stream.
        """
        request = (events or EventWatch()).request()
        call = self._stub.WatchEvents(request, metadata=self._metadata)
        try:
            for response in call:
                yield [run_event_from_proto(event) for event in response.events]
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        finally:
            call.cancel()

    def wait(self, task_id: UUID | str, timeout: float, *, poll: float = 0.1) -> TaskInfo:
        """Block until the task's newest attempt is terminal; ``TimeoutError`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get(task_id)
            if info.finished:
                return info
            if time.monotonic() >= deadline:
                state = info.latest_run.state if info.latest_run else "no run yet"
                raise TimeoutError(f"task {task_id} not finished after {timeout}s ({state})")
            time.sleep(poll)

    def drain_worker(
        self, worker_id: str, *, reason: str = "", grace: timedelta | None = None
    ) -> str:
        """Ask a worker, through its region, to drain; returns the region's name."""
        request = cluster_pb2.DrainWorkerRequest(worker_id=worker_id, reason=reason)
        if grace is not None:
            request.grace.FromTimedelta(grace)
        return self._call(self._stub.DrainWorker, request).region

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable[_Request, _Response], request: _Request
    ) -> _Response:
        size = request.ByteSize()
        if size > MAX_MESSAGE_BYTES:
            raise TooLargeError(
                "request", f"is {size} bytes; the master accepts at most {MAX_MESSAGE_BYTES}"
            )
        try:
            return method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise error_from_rpc(error) from None
        except ValueError as error:  # a closed channel
            raise UnavailableError(f"client for {self.address} is closed") from error


def _text(value: UUID | str | None) -> str | None:
    """An optional id as the text a request carries."""
    return None if value is None else str(value)


def _schedule(
    at: datetime | None,
    cron: str | None,
    timezone: str,
    every: timedelta | None,
    *,
    misfire: model.MisfirePolicy,
    overlap: model.OverlapPolicy,
) -> model.Schedule | None:
    """The schedule ``submit``'s arguments describe; None means due at once."""
    if sum(given is not None for given in (at, cron, every)) > 1:
        raise ValidationError("schedule", "give at most one of 'at', 'cron' and 'every'")
    if at is not None:
        return model.AtSchedule(at)
    if cron is not None:
        return model.CronSchedule(cron, timezone, misfire, overlap)
    if every is not None:
        return model.IntervalSchedule(every, misfire=misfire, overlap=overlap)
    return None


def _default_name(command: str) -> str:
    """A task name taken from the command's first word (empty for an empty command)."""
    words = command.split(maxsplit=1)
    return words[0] if words else ""
