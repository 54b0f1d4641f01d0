"""The domain model every tier shares: frozen values, mapped at the boundaries.

The ledger maps rows to these objects, the RPC layer maps protobuf messages to them, and
nothing in between handles raw rows or raw messages. Field names here are the vocabulary of
DESIGN.md and match the ``.proto`` contract and the ledger columns one to one.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from uuid import UUID

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
DEFAULT_PRIORITY = 0
DEFAULT_KIND = "default"
# The error text of an attempt that ended timed_out because it did not start in time.
NOT_STARTED_IN_TIME = "not started within the task's schedule_to_start_timeout"


class RunState(enum.StrEnum):
    """The state of one attempt of a run (see the state machine in DESIGN.md).

    Each attempt is its own ledger row. ``lost`` ends an attempt whose worker or region died
    mid-run; the retry policy may then create the next attempt as a new ``pending`` row.
    """

    BLOCKED = "blocked"
    PENDING = "pending"
    DELEGATED = "delegated"
    ASSIGNED = "assigned"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    UPSTREAM_FAILED = "upstream_failed"
    LOST = "lost"

    @property
    def is_terminal(self) -> bool:
        """True when this attempt will never change state again."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.UPSTREAM_FAILED,
        RunState.LOST,
    }
)

# Every legal transition, by target state: the states an attempt may be in to move there.
# The ledger turns each entry into one guarded UPDATE (``WHERE state IN (...) AND epoch = ...``).
LEGAL_SOURCES: Mapping[RunState, frozenset[RunState]] = MappingProxyType(
    {
        RunState.PENDING: frozenset({RunState.BLOCKED, RunState.DELEGATED, RunState.ASSIGNED}),
        RunState.DELEGATED: frozenset({RunState.PENDING, RunState.ASSIGNED}),
        RunState.ASSIGNED: frozenset({RunState.DELEGATED}),
        RunState.RUNNING: frozenset({RunState.ASSIGNED}),
        RunState.SUCCEEDED: frozenset({RunState.RUNNING}),
        RunState.FAILED: frozenset({RunState.RUNNING}),
        RunState.TIMED_OUT: frozenset(
            {RunState.PENDING, RunState.DELEGATED, RunState.ASSIGNED, RunState.RUNNING}
        ),
        RunState.CANCELLED: frozenset(
            {
                RunState.BLOCKED,
                RunState.PENDING,
                RunState.DELEGATED,
                RunState.ASSIGNED,
                RunState.RUNNING,
            }
        ),
        RunState.UPSTREAM_FAILED: frozenset({RunState.BLOCKED}),
        RunState.LOST: frozenset({RunState.ASSIGNED, RunState.RUNNING}),
        RunState.BLOCKED: frozenset(),
    }
)


def is_legal_transition(source: RunState, target: RunState) -> bool:
    """True when an attempt in ``source`` may move to ``target``."""
    return source in LEGAL_SOURCES[target]


class Executor(enum.StrEnum):
    """How a worker runs a task's command."""

    SHELL = "shell"  # /bin/sh -c COMMAND
    EXEC = "exec"  # argv = [COMMAND, *ARGS], no shell
    NOOP = "noop"  # succeeds at once without a process; for benchmarks and tests


class Placement(enum.StrEnum):
    """Whether a run may spill over to a fallback region."""

    STRICT = "strict"
    PREFER = "prefer"


class MisfirePolicy(enum.StrEnum):
    """What a recurring schedule does with fire times missed during downtime."""

    ALL = "all"
    LATEST = "latest"
    NONE = "none"


class OverlapPolicy(enum.StrEnum):
    """What a recurring schedule does when a fire comes while the previous run is unfinished."""

    ALLOW = "allow"
    FORBID = "forbid"
    REPLACE = "replace"


@dataclass(frozen=True, slots=True)
class AtSchedule:
    """One run at one instant (timezone-aware)."""

    at: datetime


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """One run per fire time of a cron expression, evaluated in an IANA time zone."""

    expression: str
    timezone: str = "UTC"
    misfire: MisfirePolicy = MisfirePolicy.LATEST
    overlap: OverlapPolicy = OverlapPolicy.ALLOW


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """One run every ``every``, starting at ``start_at`` (or submission time)."""

    every: timedelta
    start_at: datetime | None = None
    misfire: MisfirePolicy = MisfirePolicy.LATEST
    overlap: OverlapPolicy = OverlapPolicy.ALLOW


Schedule = AtSchedule | CronSchedule | IntervalSchedule


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Opt-in retries of execution outcomes; ``max_attempts=1`` (the default) never retries."""

    max_attempts: int = 1
    initial_backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(minutes=5)
    multiplier: float = 2.0
    retry_on: frozenset[RunState] = frozenset()


@dataclass(frozen=True, slots=True)
class TaskSpec:
    """What a client submits: a task definition before it has an id."""

    name: str
    command: str
    executor: Executor = Executor.SHELL
    args: tuple[str, ...] = ()
    description: str = ""
    schedule: Schedule | None = None  # None: due at once
    priority: int = DEFAULT_PRIORITY
    region: str | None = None  # None: any region, placed by free capacity
    placement: Placement = Placement.STRICT
    kind: str = DEFAULT_KIND
    timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dependencies: tuple[UUID, ...] = ()
    idempotency_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WorkflowTask:
    """One task of a workflow submission: its spec and the local names it waits for."""

    local_name: str
    spec: TaskSpec
    depends_on: tuple[str, ...] = ()  # local names of tasks of the same submission


@dataclass(frozen=True, slots=True)
class Task:
    """A stored task definition."""

    id: UUID
    spec: TaskSpec
    created_at: datetime
    workflow_id: UUID | None = None
    paused: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """One attempt of one run of a task, as the ledger holds it."""

    id: UUID
    task_id: UUID
    attempt: int
    state: RunState
    epoch: int
    priority: int
    due_at: datetime
    created_at: datetime
    region: str | None = None
    worker_id: str | None = None
    delegated_at: datetime | None = None
    assigned_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    output_tail: str = ""
    error: str = ""
    ready_at: datetime | None = None  # when it may be claimed: due_at, or later after a backoff


# --- Ledger vocabulary: the inputs and outputs of the ledger's operations -------------------


class RegionState(enum.StrEnum):
    """Whether a region is taking work, as the ledger last saw it."""

    UP = "up"
    DRAINING = "draining"
    DOWN = "down"  # its heartbeat went stale and its runs were reaped


class WorkerState(enum.StrEnum):
    """Whether a worker is taking work, as its region last reported."""

    UP = "up"
    DRAINING = "draining"
    DOWN = "down"


class TransitionRefusal(enum.StrEnum):
    """Why the ledger refused a transition; a refused transition changed nothing."""

    UNKNOWN_RUN = "unknown_run"  # no attempt has this id
    STALE_EPOCH = "stale_epoch"  # the writer's epoch is not the attempt's current one
    ILLEGAL_STATE = "illegal_state"  # the attempt's state is not a legal source of the target
    DUPLICATE = "duplicate"  # the attempt is already in the target state at this epoch


@dataclass(frozen=True, slots=True)
class Transition:
    """A request to move one attempt to ``target``, fenced by the epoch its writer holds."""

    run_id: UUID
    epoch: int
    target: RunState
    at: datetime
    worker_id: str | None = None
    exit_code: int | None = None
    output_tail: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TransitionOutcome:
    """What the ledger did with one ``Transition``: applied it, or refused it and why."""

    transition: Transition
    refusal: TransitionRefusal | None = None
    current_state: RunState | None = None  # after the transition, or as found when refused
    current_epoch: int | None = None
    run: Run | None = None  # the attempt as written, when applied
    next_attempt: Run | None = None  # the retry this outcome created, if any

    @property
    def applied(self) -> bool:
        """True when the transition was written to the ledger."""
        return self.refusal is None


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """A run the master claimed for delegation, with what a worker needs to execute it."""

    run_id: UUID
    task_id: UUID
    task_name: str
    attempt: int
    epoch: int
    priority: int
    region: str
    due_at: datetime
    delegated_at: datetime
    command: str
    executor: Executor
    args: tuple[str, ...]
    kind: str
    placement: Placement
    timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """One entry of the ledger's event log: an attempt created or moved between states."""

    id: int
    at: datetime
    run_id: UUID
    task_id: UUID
    attempt: int
    from_state: RunState | None  # None when the attempt was created
    to_state: RunState
    epoch: int
    region: str | None = None
    worker_id: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Narrows the event log; every field left empty matches everything."""

    task_id: UUID | None = None
    run_id: UUID | None = None
    region: str | None = None
    states: frozenset[RunState] = frozenset()  # match on ``to_state``
    workflow_id: UUID | None = None  # runs of the workflow's tasks


@dataclass(frozen=True, slots=True, order=True)
class EventCursor:
    """A position in the event log in commit-safe order: after event ``id`` of transaction ``txid``.

    Live tails move by (txid, id), not by id alone: ids are handed out before commit, so a
    later id can become visible before an earlier one (see ``ledger.reads.follow_events``).
    """

    txid: int
    id: int


@dataclass(frozen=True, slots=True)
class EventPage:
    """Events in commit-safe order, and the cursor to read on from."""

    events: list[RunEvent]
    cursor: EventCursor


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a listing shows; every field left unset matches every task."""

    state: RunState | None = None  # of the latest attempt
    region: str | None = None  # the task's region or its latest attempt's
    kind: str | None = None
    search: str | None = None  # a piece of the name, or the start of the task id
    created_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskStatus:
    """A task with its latest attempt (None for a schedule with no run yet)."""

    task: Task
    latest_run: Run | None = None


@dataclass(frozen=True, slots=True)
class RecurringTask:
    """A cron or interval task and where its fires stand: what the materialiser plans from."""

    task: Task
    last_due_at: datetime | None = None  # the latest materialised fire time, None before any
    unfinished: bool = False  # an attempt of the latest fire is not terminal yet
    last_finished_at: datetime | None = None  # when the latest fire's last attempt ended
    resumed_at: datetime | None = None  # when it was last resumed; fires before are misfires


@dataclass(frozen=True, slots=True)
class ScheduledTask:
    """A recurring task as ``taskmesh schedule`` shows it: its last fire and the next ones."""

    task: Task
    last_fire: datetime | None = None  # the latest fire time that has a run
    next_fires: tuple[datetime, ...] = ()  # upcoming fire times, earliest first; () if paused


@dataclass(frozen=True, slots=True)
class Region:
    """A regional scheduler as the ledger knows it from its heartbeats."""

    name: str
    address: str
    credit: int
    heartbeat_at: datetime
    state: RegionState = RegionState.UP


@dataclass(frozen=True, slots=True)
class Worker:
    """A worker as its region registered it in the ledger."""

    id: str
    region: str
    slots: int
    heartbeat_at: datetime
    labels: Mapping[str, str] = field(default_factory=dict)
    state: WorkerState = WorkerState.UP


@dataclass(frozen=True, slots=True)
class Cancellation:
    """The result of cancelling a task: what the ledger cancelled, what the master must forward."""

    task_id: UUID
    cancelled: tuple[Run, ...] = ()  # blocked/pending attempts, now cancelled
    to_forward: tuple[Run, ...] = ()  # delegated/assigned/running attempts, with their region


@dataclass(frozen=True, slots=True)
class ReapResult:
    """What reaping a dead region did to its unfinished attempts."""

    region: str
    requeued: tuple[Run, ...] = ()  # delegated/assigned, back to pending with a new epoch
    lost: tuple[Run, ...] = ()  # running, now lost
    retries: tuple[Run, ...] = ()  # next attempts created for lost ones


@dataclass(frozen=True, slots=True)
class SubmittedWorkflow:
    """A stored workflow: its id and each task with its first run, in submission order."""

    workflow_id: UUID
    tasks: Mapping[str, tuple[Task, Run | None]]  # by local name


@dataclass(frozen=True, slots=True)
class Workflow:
    """A stored workflow: a named group of tasks submitted together."""

    id: UUID
    name: str
    created_at: datetime
    task_count: int = 0


@dataclass(frozen=True, slots=True)
class WorkflowGraph:
    """A workflow with each task's latest attempt.

    The edges are the tasks' dependencies (``task.spec.dependencies``) that point to tasks of
    the same workflow; dependencies on outside tasks are left to the task itself.
    """

    workflow: Workflow
    nodes: tuple[TaskStatus, ...]

    @property
    def edges(self) -> tuple[tuple[UUID, UUID], ...]:
        """``(dependency, dependent)`` pairs inside the workflow, in node order."""
        members = {status.task.id for status in self.nodes}
        return tuple(
            (dependency, status.task.id)
            for status in self.nodes
            for dependency in status.task.spec.dependencies
            if dependency in members
        )


@dataclass(frozen=True, slots=True)
class ActivityBucket:
    """One time slice of cluster activity: attempts that ended, and how fast runs were picked up.

    ``pickup`` is ``started_at - ready_at`` (the due time, or the end of a retry backoff) of the
    attempts that started in the slice, in seconds; None when none started.
    """

    start: datetime
    finished: int
    failed: int  # of ``finished``: every terminal state but succeeded
    pickup_p50: float | None
    pickup_p95: float | None


@dataclass(frozen=True, slots=True)
class RetriedTask:
    """What a manual retry created: the task's next attempt and its re-queued dependents'."""

    task_id: UUID
    run: Run
    requeued: tuple[Run, ...] = ()  # new blocked attempts of upstream_failed descendants
