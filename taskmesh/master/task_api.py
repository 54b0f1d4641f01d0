"""What clients can ask of the master, in model terms; gRPC and REST only translate to it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Generic, TypeVar
from uuid import UUID

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    ActivityBucket,
    EventCursor,
    EventFilter,
    RetriedTask,
    Run,
    RunEvent,
    RunState,
    ScheduledTask,
    SubmittedWorkflow,
    Task,
    TaskFilter,
    TaskSpec,
    TaskStatus,
    Workflow,
    WorkflowGraph,
    WorkflowTask,
)
from taskmesh.common.rpc import cluster_pb2, region_pb2
from taskmesh.common.topology import Topology
from taskmesh.master.admission import Admission
from taskmesh.master.cancel_forwarding import by_region, forward_cancels
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.cluster_view import cluster_status
from taskmesh.master.event_watch import start_cursor, watch_events
from taskmesh.master.region_clients import CALL_FAILURES, RegionClients, failure_text
from taskmesh.master.schedule_preview import fire_count, preview
from taskmesh.master.validation import check_priority, validated_spec
from taskmesh.master.workflow_validation import validated_workflow

T = TypeVar("T")
log = logging.getLogger(__name__)

DEFAULT_RUN_LIMIT = 20
DEFAULT_PAGE = 100
MAX_PAGE = 1000
RUNS_READ = 1000  # attempts of one task read at most (the ledger lists them oldest first)
EVENTS_READ = 200  # transitions of one task shown at most (its newest)


@dataclass(frozen=True, slots=True)
class Submission:
    """The answer to a submit: the task, its first run, and whether it was stored just now."""

    task: Task
    first_run: Run | None
    created: bool


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the token of the next (empty on the last page)."""

    items: list[T] = field(default_factory=list)
    next_token: str = ""


def page_size(limit: int) -> int:
    """The page size asked for: 0 means the default; at most ``MAX_PAGE``."""
    if limit < 0:
        raise ValidationError("limit", f"must not be negative, got {limit}")
    return min(limit or DEFAULT_PAGE, MAX_PAGE)


class TaskApi:
    """Submission, inspection and steering of tasks over the ledger and the regions."""

    def __init__(
        self,
        ledger: Ledger,
        regions: RegionClients,
        topology: Topology,
        *,
        clock: Clock = utc_now,
    ) -> None:
        """Serve clients from ``ledger``, forwarding cancels and priorities to ``regions``."""
        self.topology = topology
        self._ledger = ledger
        self._regions = regions
        self._clock = clock
        self._admission = Admission(ledger, topology.master.max_pending_runs)

    async def submit(self, spec: TaskSpec) -> Submission:
        """Validate and store a task with its first run, in one transaction."""
        spec = validated_spec(spec, self.topology)
        await self._admission.admit()
        try:
            task, run, created = await self._ledger.submit_task(spec, self._clock())
        except NotFoundError as error:  # only a dependency can be missing
            raise ValidationError("dependencies", str(error)) from None
        return Submission(task, run, created)

    async def submit_workflow(
        self, tasks: Sequence[WorkflowTask], name: str = ""
    ) -> SubmittedWorkflow:
        """Validate and store a workflow and all its tasks, in one transaction."""
        tasks = validated_workflow(tasks, self.topology)
        await self._admission.admit()
        return await self._ledger.submit_workflow(name, tasks, self._clock())

    async def get_task(self, task_id: UUID, run_limit: int = 0) -> tuple[Task, list[Run]]:
        """A task and its most recent attempts, newest first."""
        if run_limit < 0:
            raise ValidationError("run_limit", f"must not be negative, got {run_limit}")
        task = await self._ledger.get_task(task_id)
        runs = await self._ledger.list_runs(task_id, limit=RUNS_READ)
        return task, runs[::-1][: run_limit or DEFAULT_RUN_LIMIT]

    async def task_events(self, task_id: UUID, limit: int = 0) -> list[RunEvent]:
        """A task's newest transitions (``limit``, default and at most ``EVENTS_READ``), oldest
        first; an unknown task is a ``NotFoundError``."""
        if not 0 <= limit <= EVENTS_READ:
            raise ValidationError("limit", f"must be between 0 and {EVENTS_READ}, got {limit}")
        await self._ledger.get_task(task_id)
        return await self._ledger.task_events(task_id, limit or EVENTS_READ)

    async def task_status(self, task_id: UUID) -> TaskStatus:
        """A task and its latest attempt."""
        task = await self._ledger.get_task(task_id)
        return TaskStatus(task, await self._ledger.latest_run(task_id))

    async def list_tasks(
        self,
        *,
        states: Collection[RunState] = (),
        region: str | None = None,
        filters: TaskFilter | None = None,
        limit: int = 0,
        page_token: str = "",
    ) -> Page[TaskStatus]:
        """Tasks newest first with their latest attempt; filtered on one state at most.

        ``states`` and ``region`` narrow ``filters`` (kind, search, creation time) further.
        """
        if len(states) > 1:
            raise ValidationError("states", "filter on one state at most")
        size = page_size(limit)
        after = _token_id(page_token) if page_token else None
        chosen = replace(
            filters or TaskFilter(),
            state=next(iter(states), None) or (filters.state if filters else None),
            region=region or (filters.region if filters else None),
        )
        found = await self._ledger.list_tasks(filters=chosen, limit=size + 1, after=after)
        more = len(found) > size
        items = found[:size]
        return Page(items, str(items[-1].task.id) if more else "")

    async def get_run(self, run_id: UUID) -> Run:
        """One attempt."""
        return await self._ledger.get_run(run_id)

    async def list_runs(
        self,
        task_id: UUID,
        *,
        states: Collection[RunState] = (),
        region: str | None = None,
        worker_id: str | None = None,
        limit: int = 0,
        page_token: str = "",
    ) -> Page[Run]:
        """A task's attempts newest first, filtered, paged by offset."""
        await self._ledger.get_task(task_id)  # NotFoundError for an unknown task
        runs = [
            run
            for run in reversed(await self._ledger.list_runs(task_id, limit=RUNS_READ))
            if (not states or run.state in states)
            and (region is None or run.region == region)
            and (worker_id is None or run.worker_id == worker_id)
        ]
        start, size = _token_offset(page_token), page_size(limit)
        more = len(runs) > start + size
        return Page(runs[start : start + size], str(start + size) if more else "")

    async def cancel(self, task_id: UUID, reason: str = "") -> list[UUID]:
        """Cancel a task's unfinished runs: here, and in the regions that hold them."""
        cancellation = await self._ledger.cancel_task(task_id, self._clock())
        forwarded = await forward_cancels(
            self._regions, cancellation.to_forward, reason or "cancelled"
        )
        return [run.id for run in cancellation.cancelled] + forwarded

    async def pause(self, task_id: UUID) -> tuple[Task, list[UUID]]:
        """Pause a recurring task's schedule; returns it and the fires cancelled ahead."""
        task, cancellation = await self._ledger.pause_schedule(task_id, self._clock())
        return task, [run.id for run in cancellation.cancelled]

    async def resume(self, task_id: UUID) -> Task:
        """Resume a paused schedule; fires missed while paused follow its misfire policy."""
        return await self._ledger.resume_schedule(task_id, self._clock())

    async def schedules(self, next_count: int = 0) -> tuple[datetime, list[ScheduledTask]]:
        """Every recurring task with its next fire times after now; returns (now, them)."""
        count = fire_count(next_count)
        now = self._clock()
        found = await self._ledger.recurring_tasks(include_paused=True)
        return now, [preview(item, now, count) for item in found]

    async def set_priority(self, task_id: UUID, priority: int) -> list[UUID]:
        """Reprioritise a task and its unfinished runs, queued ones in their regions too."""
        runs = await self._ledger.set_priority(task_id, check_priority(priority))
        queued = [run for run in runs if run.state is RunState.DELEGATED]
        await self._forward_priorities(queued, priority)
        return [run.id for run in runs]

    async def retry(self, task_id: UUID) -> RetriedTask:
        """One more attempt for a task whose latest run ended without success."""
        return await self._ledger.retry_task(task_id, self._clock())

    async def list_workflows(self, limit: int = 0) -> list[Workflow]:
        """The newest workflows first."""
        return await self._ledger.list_workflows(page_size(limit))

    async def workflow_graph(self, workflow_id: UUID) -> WorkflowGraph:
        """A workflow's tasks with their latest runs; edges follow their dependencies."""
        return await self._ledger.workflow_graph(workflow_id)

    async def run_totals(self) -> dict[RunState, int]:
        """Exactly how many attempts are in each state."""
        return await self._ledger.count_runs_by_state()

    async def run_activity(self, window: timedelta, step: timedelta) -> list[ActivityBucket]:
        """Throughput and pickup latency per ``step`` over the last ``window``."""
        return await self._ledger.run_activity(self._clock(), window, step)

    async def cluster(self) -> list[cluster_pb2.RegionStatus]:
        """Every topology region as the ledger, the region and the master see it."""
        return await cluster_status(self._ledger, self._regions, self._clock())

    async def event_cursor(self, after_id: int) -> EventCursor:
        """Where an event watch starts: after event ``after_id``, or at the present when 0."""
        return await start_cursor(self._ledger, after_id)

    def watch_events(
        self, filters: EventFilter, cursor: EventCursor, stopping: asyncio.Event
    ) -> AsyncIterator[list[RunEvent]]:
        """Batches of run events after ``cursor`` until ``stopping``; empty ones are keep-alives."""
        return watch_events(self._ledger, filters, cursor, stopping)

    async def _forward_priorities(self, runs: Sequence[Run], priority: int) -> None:
        """Tell each region the new priority of its queued runs (best effort)."""
        for name, members in by_region(self._regions, runs).items():
            items = [
                region_pb2.RunPriority(
                    run=region_pb2.RunRef(run_id=str(run.id), epoch=run.epoch), priority=priority
                )
                for run in members
            ]
            try:
                await self._regions.get(name).reprioritise(items)
            except CALL_FAILURES as error:
                log.warning("region %s: new priority not forwarded: %s", name, failure_text(error))


def _token_id(token: str) -> UUID:
    """The task id a ``list_tasks`` page token stands for."""
    try:
        return UUID(token)
    except ValueError:
        raise ValidationError("page_token", "is not a token this server issued") from None


def _token_offset(token: str) -> int:
    """The offset a ``list_runs`` page token stands for."""
    if not token:
        return 0
    if not token.isdigit():
        raise ValidationError("page_token", "is not a token this server issued")
    return int(token)
