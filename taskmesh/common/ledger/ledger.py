"""The ``Ledger``: the one owner of every query taskmesh makes.

Each method is one transaction, retried a few times on deadlock or serialization failure.
When PostgreSQL cannot be reached a method raises ``LedgerUnavailableError``; callers retry
with backoff and keep their work meanwhile. Times are passed in (``now``), never read here,
so callers control the clock and tests are deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TypeVar
from uuid import UUID

from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random

from taskmesh.common.ledger import (
    activity,
    control,
    deadlines,
    dispatch,
    locks,
    manual_retry,
    membership,
    notifications,
    reads,
    recurring,
    submission,
    transitions,
    workflow_graphs,
    workflows,
)
from taskmesh.common.ledger.engine import create_engine, is_conflict, translated_errors
from taskmesh.common.ledger.retries import DEFAULT_LOST_RETRY_LIMIT, Jitter
from taskmesh.common.model import (
    ActivityBucket,
    Cancellation,
    ClaimedRun,
    EventCursor,
    EventFilter,
    EventPage,
    ReapResult,
    RecurringTask,
    Region,
    RegionState,
    RetriedTask,
    Run,
    RunEvent,
    RunState,
    SubmittedWorkflow,
    Task,
    TaskFilter,
    TaskSpec,
    TaskStatus,
    Transition,
    TransitionOutcome,
    Worker,
    WorkerState,
    Workflow,
    WorkflowGraph,
    WorkflowTask,
)

T = TypeVar("T")
CONFLICT_ATTEMPTS = 5


class Ledger:
    """Every read and write of the PostgreSQL ledger, one transaction per operation."""

    def __init__(self, engine: AsyncEngine, *, jitter: Jitter = random.random) -> None:
        """Wrap an engine (see ``Ledger.connect``); ``jitter`` feeds retry backoffs."""
        self._engine = engine
        self._jitter = jitter

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        pool_size: int = 5,
        application_name: str = "taskmesh",
        jitter: Jitter = random.random,
    ) -> Ledger:
        """Open a small pool to the ledger at ``url`` and check that it answers."""
        ledger = cls(
            create_engine(url, pool_size=pool_size, application_name=application_name),
            jitter=jitter,
        )
        try:
            await ledger.ping()
        except BaseException:
            await ledger.close()
            raise
        return ledger

    def dedicated(self, application_name: str) -> Ledger:
        """A pool of its own to the same ledger, for one duty that must not queue for a
        connection behind the API's callers (the dispatcher). Its connections are made on
        first use and not pinged at checkout: the duty retries a failed operation anyway."""
        engine = create_engine(
            self._engine.url, pool_size=1, application_name=application_name, pre_ping=False
        )
        return Ledger(engine, jitter=self._jitter)

    async def close(self) -> None:
        """Close every pooled connection; idempotent."""
        await self._engine.dispose()

    async def __aenter__(self) -> Ledger:
        """``async with await Ledger.connect(url) as ledger``: closed on exit."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the pool."""
        await self.close()

    @property
    def url(self) -> URL:
        """The ledger's URL (asyncpg driver)."""
        return self._engine.url

    async def _transaction(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """Run ``operation`` in one transaction, retried on deadlock or serialization failure."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_conflict),
            stop=stop_after_attempt(CONFLICT_ATTEMPTS),
            wait=wait_random(0, 0.05),
            reraise=True,
        )
        with translated_errors():
            async for attempt in retrying:
                with attempt:
                    async with self._engine.begin() as connection:
                        return await operation(connection)
        raise AssertionError("unreachable: tenacity re-raises the last error")

    async def ping(self) -> None:
        """Round-trip to PostgreSQL; ``LedgerUnavailableError`` when it does not answer."""

        async def select_one(connection: AsyncConnection) -> None:
            """The cheapest statement there is."""
            await connection.execute(text("SELECT 1"))

        await self._transaction(select_one)

    # --- submission ---------------------------------------------------------------------------

    async def submit_task(
        self, spec: TaskSpec, now: datetime, *, workflow_id: UUID | None = None
    ) -> tuple[Task, Run | None, bool]:
        """Store a task and its first run; returns (task, first run or None, created)."""
        return await self._transaction(lambda c: submission.submit_task(c, spec, now, workflow_id))

    async def materialise_runs(
        self, task_id: UUID, due_times: Sequence[datetime], now: datetime
    ) -> list[Run]:
        """Create first attempts for these fire times; existing fire times are skipped."""
        return await self._transaction(
            lambda c: submission.materialise_runs(c, task_id, due_times, now)
        )

    async def recurring_tasks(self, *, include_paused: bool = False) -> list[RecurringTask]:
        """Every (unpaused) cron and interval task with its latest fire, in one query."""
        return await self._transaction(lambda c: recurring.recurring_tasks(c, include_paused))

    async def pause_schedule(self, task_id: UUID, now: datetime) -> tuple[Task, Cancellation]:
        """Stop a recurring task's fires; its fires not due yet are cancelled. Idempotent."""
        return await self._transaction(
            lambda c: recurring.pause_schedule(c, task_id, now, self._jitter)
        )

    async def resume_schedule(self, task_id: UUID, now: datetime) -> Task:
        """Let a paused recurring task fire again; fires due while paused are misfires."""
        return await self._transaction(lambda c: recurring.resume_schedule(c, task_id, now))

    async def replace_runs(
        self, task_id: UUID, due_at: datetime, now: datetime
    ) -> tuple[Cancellation, list[Run]]:
        """Cancel earlier fires' unfinished runs (in-flight ones returned) and create this one."""
        return await self._transaction(
            lambda c: recurring.replace_runs(c, task_id, due_at, now, self._jitter)
        )

    async def create_workflow(self, name: str, now: datetime) -> UUID:
        """Create a workflow to group tasks; returns its id."""
        return await self._transaction(lambda c: submission.create_workflow(c, name, now))

    async def submit_workflow(
        self, name: str, tasks: Sequence[WorkflowTask], now: datetime
    ) -> SubmittedWorkflow:
        """Store a workflow and all its tasks with their first runs, all or nothing."""
        return await self._transaction(lambda c: workflows.submit_workflow(c, name, tasks, now))

    # --- reads --------------------------------------------------------------------------------

    async def get_task(self, task_id: UUID) -> Task:
        """The task with this id; ``NotFoundError`` if there is none."""
        return await self._transaction(lambda c: reads.get_task(c, task_id))

    async def list_tasks(
        self,
        *,
        state: RunState | None = None,
        region: str | None = None,
        filters: TaskFilter | None = None,
        limit: int = 100,
        before: UUID | None = None,
        after: UUID | None = None,
    ) -> list[TaskStatus]:
        """Tasks newest first, each with its latest run; one keyset page.

        ``state`` filters on the latest run's state, ``region`` on the task's region or its
        latest run's (both shorthands for ``filters``, which wins when given); ``after``
        continues past a task id (older), ``before`` goes back.
        """
        chosen = filters or TaskFilter(state=state, region=region)
        return await self._transaction(
            lambda c: reads.list_tasks(c, filters=chosen, limit=limit, before=before, after=after)
        )

    async def get_run(self, run_id: UUID) -> Run:
        """The attempt with this id; ``NotFoundError`` if there is none."""
        return await self._transaction(lambda c: reads.get_run(c, run_id))

    async def list_runs(self, task_id: UUID, *, limit: int = 1000) -> list[Run]:
        """A task's attempts in fire-time then attempt order."""
        return await self._transaction(lambda c: reads.list_runs(c, task_id, limit))

    async def latest_run(self, task_id: UUID) -> Run | None:
        """A task's latest attempt, or None when it has no run yet."""
        return await self._transaction(lambda c: reads.latest_run(c, task_id))

    async def events_after(
        self, event_id: int, limit: int = 500, filters: EventFilter | None = None
    ) -> list[RunEvent]:
        """Events with an id above ``event_id``, oldest first."""
        return await self._transaction(
            lambda c: reads.events_after(c, event_id, limit, filters or EventFilter())
        )

    async def task_events(self, task_id: UUID, limit: int = 200) -> list[RunEvent]:
        """A task's newest ``limit`` events, oldest first (its transitions, for the timeline)."""
        return await self._transaction(lambda c: reads.task_events(c, task_id, limit))

    async def follow_events(
        self, cursor: EventCursor, limit: int = 500, filters: EventFilter | None = None
    ) -> EventPage:
        """The next events of a live tail, in commit-safe order; see ``reads.follow_events``."""
        return await self._transaction(
            lambda c: reads.follow_events(c, cursor, limit, filters or EventFilter())
        )

    async def event_cursor(self, after_id: int) -> EventCursor:
        """Where a live tail starts: after event ``after_id``, or at the present when 0."""
        return await self._transaction(lambda c: reads.event_cursor(c, after_id))

    async def count_pending(self) -> int:
        """How many attempts wait in ``pending``: the backlog for admission control."""
        return await self._transaction(reads.count_pending)

    async def delegated_before(
        self,
        region: str,
        before: datetime,
        keep: Callable[[UUID, int], bool] = lambda _run_id, _epoch: True,
    ) -> list[tuple[UUID, int]]:
        """(run id, epoch) of runs delegated to ``region`` before ``before``, still delegated,
        those ``keep`` accepts (streamed, so only those are ever held in memory)."""
        return await self._transaction(lambda c: reads.delegated_before(c, region, before, keep))

    async def count_runs_by_state(self) -> dict[RunState, int]:
        """Exactly how many attempts are in each state (every attempt, history included)."""
        return await self._transaction(reads.count_runs_by_state)

    async def run_activity(
        self, until: datetime, window: timedelta, step: timedelta
    ) -> list[ActivityBucket]:
        """Throughput and pickup latency in slices of ``step`` over ``window`` up to ``until``."""
        return await self._transaction(lambda c: activity.run_activity(c, until, window, step))

    async def list_workflows(self, limit: int = 100) -> list[Workflow]:
        """The newest workflows first, with how many tasks each holds."""
        return await self._transaction(lambda c: workflow_graphs.list_workflows(c, limit))

    async def workflow_graph(self, workflow_id: UUID) -> WorkflowGraph:
        """A workflow's tasks with their latest attempts; ``NotFoundError`` if unknown."""
        return await self._transaction(lambda c: workflow_graphs.workflow_graph(c, workflow_id))

    async def count_runs(self) -> dict[tuple[RunState, str | None], int]:
        """How many attempts are in each (state, region); states with none are left out."""
        return await self._transaction(reads.count_runs)

    async def list_regions(self) -> list[Region]:
        """Every region that has sent a heartbeat."""
        return await self._transaction(reads.list_regions)

    async def spillover_counts(self, since: datetime) -> dict[tuple[str, str], int]:
        """Attempts delegated to a fallback region since ``since``, by (from, to) region."""
        return await self._transaction(lambda c: reads.spillover_counts(c, since))

    async def list_workers(self, region: str | None = None) -> list[Worker]:
        """Registered workers, of one region or all."""
        return await self._transaction(lambda c: reads.list_workers(c, region))

    # --- dispatch -----------------------------------------------------------------------------

    async def claim_due_runs(
        self,
        credits: Mapping[str, int],
        now: datetime,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
    ) -> list[ClaimedRun]:
        """Claim ready runs for delegation, at most each region's credit; see ``dispatch``."""
        return await self._transaction(
            lambda c: dispatch.claim_due_runs(c, credits, now, fallbacks)
        )

    async def claim_due_runs_and_next_ready(
        self,
        credits: Mapping[str, int],
        now: datetime,
        fallbacks: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[list[ClaimedRun], datetime | None]:
        """``claim_due_runs``, and ``next_ready_at`` in the same transaction (one round trip
        to the pool and one commit fewer per dispatch round)."""

        async def claim(connection: AsyncConnection) -> tuple[list[ClaimedRun], datetime | None]:
            claimed = await dispatch.claim_due_runs(connection, credits, now, fallbacks)
            return claimed, await dispatch.next_ready_at(connection, now)

        return await self._transaction(claim)

    async def next_ready_at(self, now: datetime) -> datetime | None:
        """When the next pending run becomes claimable after ``now`` (None: none by time)."""
        return await self._transaction(lambda c: dispatch.next_ready_at(c, now))

    async def release_runs(
        self, items: Sequence[tuple[UUID, int]], now: datetime
    ) -> list[TransitionOutcome]:
        """Put delegated runs a region did not accept back to pending: (run_id, epoch) pairs."""
        batch = [Transition(run_id, epoch, RunState.PENDING, now) for run_id, epoch in items]
        detail = {"cause": "released"}
        return await self._transaction(
            lambda c: transitions.record(c, batch, self._jitter, 0, detail)
        )

    async def park_runs(
        self,
        items: Sequence[tuple[UUID, int]],
        now: datetime,
        until: datetime,
        detail: Mapping[str, object],
    ) -> list[TransitionOutcome]:
        """Put refused runs back to pending, not to be claimed before ``until``."""
        batch = [Transition(run_id, epoch, RunState.PENDING, now) for run_id, epoch in items]

        async def parked(connection: AsyncConnection) -> list[TransitionOutcome]:
            outcomes = await transitions.record(connection, batch, self._jitter, 0, detail)
            applied = [outcome.transition.run_id for outcome in outcomes if outcome.applied]
            await dispatch.park(connection, applied, until)
            return outcomes

        return await self._transaction(parked)

    def listen_for_due_runs(self) -> AbstractAsyncContextManager[notifications.DueSignal]:
        """Notifications of runs becoming due, now or later (LISTEN on a dedicated connection)."""
        return notifications.due_runs_listener(self._engine.url)

    def singleton(self, name: str) -> AbstractAsyncContextManager[locks.Leadership]:
        """Try to take a singleton duty (advisory lock held for the block)."""
        return locks.singleton(self._engine.url, name)

    # --- transitions --------------------------------------------------------------------------

    async def record_transitions(
        self,
        items: Sequence[Transition],
        *,
        lost_retry_limit: int = DEFAULT_LOST_RETRY_LIMIT,
    ) -> list[TransitionOutcome]:
        """Apply a batch of guarded transitions with their consequences; one outcome per item."""
        return await self._transaction(
            lambda c: transitions.record(c, items, self._jitter, lost_retry_limit)
        )

    # --- control ------------------------------------------------------------------------------

    async def set_priority(self, task_id: UUID, priority: int) -> list[Run]:
        """Reprioritise a task; returns its unfinished attempts with the region each is in."""
        return await self._transaction(lambda c: control.set_priority(c, task_id, priority))

    async def retry_task(self, task_id: UUID, now: datetime) -> RetriedTask:
        """One more attempt for a task whose latest ended without success; see ``manual_retry``."""
        return await self._transaction(lambda c: manual_retry.retry_task(c, task_id, now))

    async def cancel_task(self, task_id: UUID, now: datetime) -> Cancellation:
        """Cancel a task's blocked/pending runs and stop its schedule; returns in-flight runs."""
        return await self._transaction(lambda c: control.cancel_task(c, task_id, now, self._jitter))

    async def time_out_unstarted(self, now: datetime) -> list[TransitionOutcome]:
        """End pending/delegated attempts past their schedule-to-start bound ``timed_out``."""
        return await self._transaction(lambda c: deadlines.time_out_unstarted(c, now, self._jitter))

    async def reap_region(
        self,
        region: str,
        now: datetime,
        *,
        lost_retry_limit: int = DEFAULT_LOST_RETRY_LIMIT,
        started_only: bool = False,
    ) -> ReapResult:
        """Take back a dead region's runs and mark it down; see ``control.reap_region``."""
        return await self._transaction(
            lambda c: control.reap_region(
                c, region, now, self._jitter, lost_retry_limit, started_only=started_only
            )
        )

    # --- membership ---------------------------------------------------------------------------

    async def heartbeat_region(
        self,
        name: str,
        address: str,
        credit: int,
        now: datetime,
        *,
        state: RegionState = RegionState.UP,
    ) -> Region:
        """Register or refresh a region (upsert)."""
        return await self._transaction(
            lambda c: membership.heartbeat_region(
                c, name=name, address=address, credit=credit, now=now, state=state
            )
        )

    async def stale_regions(self, now: datetime, stale_after: timedelta) -> list[Region]:
        """Regions not marked down whose heartbeat is older than ``stale_after``."""
        return await self._transaction(lambda c: membership.stale_regions(c, now, stale_after))

    async def upsert_worker(
        self,
        worker_id: str,
        region: str,
        slots: int,
        now: datetime,
        *,
        labels: Mapping[str, str] | None = None,
    ) -> Worker:
        """Register or re-register a worker."""
        return await self._transaction(
            lambda c: membership.upsert_worker(
                c, worker_id=worker_id, region=region, slots=slots, labels=labels or {}, now=now
            )
        )

    async def heartbeat_workers(self, worker_ids: Collection[str], now: datetime) -> frozenset[str]:
        """Refresh many workers' heartbeats; returns the ids that are not registered."""
        return await self._transaction(lambda c: membership.heartbeat_workers(c, worker_ids, now))

    async def set_worker_state(self, worker_id: str, state: WorkerState) -> bool:
        """Mark a worker up, draining or down; False when unknown."""
        return await self._transaction(lambda c: membership.set_worker_state(c, worker_id, state))

    async def remove_worker(self, worker_id: str) -> bool:
        """Forget a worker; False when unknown."""
        return await self._transaction(lambda c: membership.remove_worker(c, worker_id))
