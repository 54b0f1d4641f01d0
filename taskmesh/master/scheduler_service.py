"""The client-facing ``Scheduler`` gRPC service: wire messages in, ``TaskApi`` calls, messages out.

Every ``TaskmeshError`` leaves as the status ``errors.grpc_status`` maps it to; a validation
error carries the offending field in the ``taskmesh-field`` trailing metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar
from uuid import UUID

import grpc.aio

from taskmesh.common.errors import NotFoundError, TaskmeshError, ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import EventFilter, RunState, WorkflowTask
from taskmesh.common.rpc import cluster_pb2, scheduler_pb2, scheduler_pb2_grpc
from taskmesh.common.rpc.runs import run_event_to_proto, run_to_proto
from taskmesh.common.rpc.status import error_from_rpc
from taskmesh.common.rpc.tasks import (
    scheduled_task_to_proto,
    task_spec_from_proto,
    task_status_to_proto,
    task_to_proto,
)
from taskmesh.common.rpc.values import RUN_STATES, member, timestamp, uuid
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.errors import NotSupportedError, abort
from taskmesh.master.event_watch import start_cursor, watch_events
from taskmesh.master.region_clients import RegionClients
from taskmesh.master.task_api import TaskApi

R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]


class SchedulerService(scheduler_pb2_grpc.SchedulerServicer):
    """Serves ``taskmesh.v1.Scheduler`` from a ``TaskApi``."""

    def __init__(
        self,
        api: TaskApi,
        ledger: Ledger,
        regions: RegionClients,
        stopping: asyncio.Event,
        *,
        clock: Clock = utc_now,
    ) -> None:
        """Answer from ``api``; event streams end when ``stopping`` is set."""
        self._api = api
        self._ledger = ledger
        self._regions = regions
        self._stopping = stopping
        self._clock = clock

    async def Submit(
        self, request: scheduler_pb2.SubmitRequest, context: Context
    ) -> scheduler_pb2.SubmitResponse:
        """Store one task and its first run."""
        return await _answer(context, self._submit(request))

    async def _submit(self, request: scheduler_pb2.SubmitRequest) -> scheduler_pb2.SubmitResponse:
        """Submit in model terms."""
        submission = await self._api.submit(task_spec_from_proto(request.spec))
        run = submission.first_run
        return scheduler_pb2.SubmitResponse(
            task=task_to_proto(submission.task),
            first_run=None if run is None else run_to_proto(run),
            deduplicated=not submission.created,
        )

    async def SubmitWorkflow(
        self, request: scheduler_pb2.SubmitWorkflowRequest, context: Context
    ) -> scheduler_pb2.SubmitWorkflowResponse:
        """Store a DAG of tasks and their first runs, all or nothing."""
        return await _answer(context, self._submit_workflow(request))

    async def _submit_workflow(
        self, request: scheduler_pb2.SubmitWorkflowRequest
    ) -> scheduler_pb2.SubmitWorkflowResponse:
        """SubmitWorkflow in model terms."""
        tasks = [_workflow_task(index, item) for index, item in enumerate(request.tasks)]
        workflow = await self._api.submit_workflow(tasks, request.name)
        return scheduler_pb2.SubmitWorkflowResponse(
            workflow_id=str(workflow.workflow_id),
            task_ids={name: str(task.id) for name, (task, _) in workflow.tasks.items()},
            tasks=[task_to_proto(task) for task, _ in workflow.tasks.values()],
        )

    async def GetTask(
        self, request: scheduler_pb2.GetTaskRequest, context: Context
    ) -> scheduler_pb2.GetTaskResponse:
        """One task with its most recent runs."""
        return await _answer(context, self._get_task(request))

    async def _get_task(
        self, request: scheduler_pb2.GetTaskRequest
    ) -> scheduler_pb2.GetTaskResponse:
        """GetTask in model terms."""
        task_id = uuid(request.task_id, "task_id")
        task, runs = await self._api.get_task(task_id, request.run_limit)
        return scheduler_pb2.GetTaskResponse(
            task=task_to_proto(task), runs=[run_to_proto(run) for run in runs]
        )

    async def ListTasks(
        self, request: scheduler_pb2.ListTasksRequest, context: Context
    ) -> scheduler_pb2.ListTasksResponse:
        """Tasks with their latest run, newest first."""
        return await _answer(context, self._list_tasks(request))

    async def _list_tasks(
        self, request: scheduler_pb2.ListTasksRequest
    ) -> scheduler_pb2.ListTasksResponse:
        """ListTasks in model terms."""
        if request.HasField("workflow_id"):
            raise NotSupportedError("listing tasks by workflow_id is not available yet")
        page = await self._api.list_tasks(
            states=_states(request.states),
            region=request.region if request.HasField("region") else None,
            limit=request.limit,
            page_token=request.page_token,
        )
        return scheduler_pb2.ListTasksResponse(
            tasks=[task_status_to_proto(status) for status in page.items],
            next_page_token=page.next_token,
        )

    async def GetRun(
        self, request: scheduler_pb2.GetRunRequest, context: Context
    ) -> scheduler_pb2.GetRunResponse:
        """One run attempt."""
        return await _answer(context, self._get_run(request))

    async def _get_run(self, request: scheduler_pb2.GetRunRequest) -> scheduler_pb2.GetRunResponse:
        """GetRun in model terms."""
        run = await self._api.get_run(uuid(request.run_id, "run_id"))
        return scheduler_pb2.GetRunResponse(run=run_to_proto(run))

    async def ListRuns(
        self, request: scheduler_pb2.ListRunsRequest, context: Context
    ) -> scheduler_pb2.ListRunsResponse:
        """A task's run attempts, newest first."""
        return await _answer(context, self._list_runs(request))

    async def _list_runs(
        self, request: scheduler_pb2.ListRunsRequest
    ) -> scheduler_pb2.ListRunsResponse:
        """ListRuns in model terms."""
        has = request.HasField
        if has("workflow_id") or not has("task_id"):
            raise NotSupportedError("listing runs needs a task_id (workflow_id is not available)")
        page = await self._api.list_runs(
            uuid(request.task_id, "task_id"),
            states=_states(request.states),
            region=request.region if has("region") else None,
            worker_id=request.worker_id if has("worker_id") else None,
            limit=request.limit,
            page_token=request.page_token,
        )
        return scheduler_pb2.ListRunsResponse(
            runs=[run_to_proto(run) for run in page.items], next_page_token=page.next_token
        )

    async def Cancel(
        self, request: scheduler_pb2.CancelRequest, context: Context
    ) -> scheduler_pb2.CancelResponse:
        """Cancel a task's unfinished runs."""
        return await _answer(context, self._cancel(request))

    async def _cancel(self, request: scheduler_pb2.CancelRequest) -> scheduler_pb2.CancelResponse:
        """Cancel in model terms."""
        task_id = _task_target(request.WhichOneof("target"), request.task_id)
        cancelled = await self._api.cancel(task_id, request.reason)
        return scheduler_pb2.CancelResponse(cancelled_run_ids=[str(run_id) for run_id in cancelled])

    async def SetPriority(
        self, request: scheduler_pb2.SetPriorityRequest, context: Context
    ) -> scheduler_pb2.SetPriorityResponse:
        """Change the priority of a task and its unfinished runs."""
        return await _answer(context, self._set_priority(request))

    async def _set_priority(
        self, request: scheduler_pb2.SetPriorityRequest
    ) -> scheduler_pb2.SetPriorityResponse:
        """SetPriority in model terms."""
        task_id = _task_target(request.WhichOneof("target"), request.task_id)
        changed = await self._api.set_priority(task_id, request.priority)
        return scheduler_pb2.SetPriorityResponse(run_ids=[str(run_id) for run_id in changed])

    async def WatchEvents(
        self, request: scheduler_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[scheduler_pb2.WatchEventsResponse]:
        """Stream run transitions in batches until the client leaves or the master drains."""
        try:
            filters = _event_filter(request)
            cursor = await start_cursor(self._ledger, request.after_id)
            async for events in watch_events(self._ledger, filters, cursor, self._stopping):
                yield scheduler_pb2.WatchEventsResponse(
                    events=[run_event_to_proto(event) for event in events]
                )
        except TaskmeshError as error:
            await abort(context, error)

    async def GetCluster(
        self, request: scheduler_pb2.GetClusterRequest, context: Context
    ) -> scheduler_pb2.GetClusterResponse:
        """Every region with its credit, queue, breakers and workers."""
        return await _answer(context, self._get_cluster())

    async def DrainWorker(
        self, request: cluster_pb2.DrainWorkerRequest, context: Context
    ) -> cluster_pb2.DrainWorkerResponse:
        """Ask one worker, through its region, to drain."""
        return await _answer(context, _drain_worker(self._ledger, self._regions, request))

    async def _get_cluster(self) -> scheduler_pb2.GetClusterResponse:
        """GetCluster from the ledger, the regions and the breakers."""
        regions = await self._api.cluster()
        return scheduler_pb2.GetClusterResponse(
            regions=regions, observed_at=timestamp(self._clock())
        )

    async def PauseSchedule(
        self, request: scheduler_pb2.PauseScheduleRequest, context: Context
    ) -> scheduler_pb2.PauseScheduleResponse:
        """Stop a recurring task's fires."""
        return await _answer(context, self._pause(request))

    async def _pause(
        self, request: scheduler_pb2.PauseScheduleRequest
    ) -> scheduler_pb2.PauseScheduleResponse:
        """PauseSchedule in model terms."""
        task, cancelled = await self._api.pause(uuid(request.task_id, "task_id"))
        return scheduler_pb2.PauseScheduleResponse(
            task=task_to_proto(task), cancelled_run_ids=[str(run_id) for run_id in cancelled]
        )

    async def ResumeSchedule(
        self, request: scheduler_pb2.ResumeScheduleRequest, context: Context
    ) -> scheduler_pb2.ResumeScheduleResponse:
        """Let a paused recurring task fire again."""
        return await _answer(context, self._resume(request))

    async def _resume(
        self, request: scheduler_pb2.ResumeScheduleRequest
    ) -> scheduler_pb2.ResumeScheduleResponse:
        """ResumeSchedule in model terms."""
        task = await self._api.resume(uuid(request.task_id, "task_id"))
        return scheduler_pb2.ResumeScheduleResponse(task=task_to_proto(task))

    async def ListSchedules(
        self, request: scheduler_pb2.ListSchedulesRequest, context: Context
    ) -> scheduler_pb2.ListSchedulesResponse:
        """Every recurring task with its next fire times."""
        return await _answer(context, self._list_schedules(request))

    async def _list_schedules(
        self, request: scheduler_pb2.ListSchedulesRequest
    ) -> scheduler_pb2.ListSchedulesResponse:
        """ListSchedules in model terms."""
        now, found = await self._api.schedules(request.next)
        return scheduler_pb2.ListSchedulesResponse(
            schedules=[scheduled_task_to_proto(item) for item in found],
            observed_at=timestamp(now),
        )

    async def Retry(
        self, request: scheduler_pb2.RetryRequest, context: Context
    ) -> scheduler_pb2.RetryResponse:
        """Give a task whose latest run ended without success one more attempt."""
        return await _answer(context, self._retry(request))

    async def _retry(self, request: scheduler_pb2.RetryRequest) -> scheduler_pb2.RetryResponse:
        """Retry in model terms."""
        retried = await self._api.retry(uuid(request.task_id, "task_id"))
        return scheduler_pb2.RetryResponse(
            run=run_to_proto(retried.run),
            requeued=[run_to_proto(run) for run in retried.requeued],
        )


async def _drain_worker(
    ledger: Ledger, regions: RegionClients, request: cluster_pb2.DrainWorkerRequest
) -> cluster_pb2.DrainWorkerResponse:
    """Find the worker's region in the ledger and ask that region to drain it."""
    if not request.worker_id:
        raise ValidationError("worker_id", "give the id of the worker to drain")
    workers = {worker.id: worker for worker in await ledger.list_workers()}
    worker = workers.get(request.worker_id)
    if worker is None:
        raise NotFoundError(
            f"no worker {request.worker_id!r} is registered; `taskmesh cluster` lists them"
        )
    try:
        return await regions.get(worker.region).drain_worker(request)
    except grpc.aio.AioRpcError as error:
        raise error_from_rpc(error) from None


async def _answer(context: Context, work: Awaitable[R]) -> R:
    """Await ``work``; a ``TaskmeshError`` ends the call with its mapped status."""
    try:
        return await work
    except TaskmeshError as error:
        await abort(context, error)


def _workflow_task(index: int, message: scheduler_pb2.WorkflowTask) -> WorkflowTask:
    """The model task of a WorkflowTask message; a bad spec field is named ``tasks[i].spec.``."""
    try:
        spec = task_spec_from_proto(message.spec)
    except ValidationError as error:
        raise ValidationError(f"tasks[{index}].spec.{error.field}", error.message) from None
    return WorkflowTask(message.local_name, spec, tuple(message.depends_on))


def _states(values: Any) -> frozenset[RunState]:
    """Run states of a repeated ``RunState`` filter field."""
    return frozenset(member(RUN_STATES, value, "states") for value in values)


def _task_target(target: str | None, task_id: str) -> UUID:
    """The task a ``oneof target`` names; other targets are not offered yet."""
    if target is None:
        raise ValidationError("target", "name the task_id to act on")
    if target != "task_id":
        raise NotSupportedError(f"acting on a {target} is not available yet; use task_id")
    return uuid(task_id, "task_id")


def _event_filter(request: scheduler_pb2.WatchEventsRequest) -> EventFilter:
    """The ledger filter of a watch request."""
    has = request.HasField
    return EventFilter(
        task_id=uuid(request.task_id, "task_id") if has("task_id") else None,
        run_id=uuid(request.run_id, "run_id") if has("run_id") else None,
        region=request.region if has("region") else None,
        states=_states(request.states),
        workflow_id=uuid(request.workflow_id, "workflow_id") if has("workflow_id") else None,
    )
