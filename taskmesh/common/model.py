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
    placement: Placement = Placement.PREFER
    kind: str = DEFAULT_KIND
    timeout: timedelta | None = None
    schedule_to_start_timeout: timedelta | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    dependencies: tuple[UUID, ...] = ()
    idempotency_key: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


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
