"""The worker's execution slots: at most ``total`` runs at once, each one named asyncio task.

``SlotPool`` is an async context manager owning one ``asyncio.TaskGroup``: leaving it waits for
every run, and cancelling it kills every process group (the executor never leaves a process
behind). A run stopped on purpose (``stop``) still ends with a result, or with none when the
region abandoned it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import assert_never

from taskmesh.common.daemon_logging import log_context
from taskmesh.common.model import RunState
from taskmesh.common.topology.config import DEFAULT_OUTPUT_LIMIT
from taskmesh.worker.executor import GroupGuard, Outcome, RunAs, execute
from taskmesh.worker.messages import Assignment, Result, RunKey

logger = logging.getLogger(__name__)

StartListener = Callable[[Assignment, datetime], None]
FinishListener = Callable[[Assignment, Result | None], None]


class StopKind(enum.Enum):
    """Why a run is stopped before its command ends, which decides the result it reports."""

    CANCEL = "cancel"  # the region cancelled it: CANCELLED
    SHUTDOWN = "shutdown"  # the worker is shutting down past its grace: FAILED
    ABANDON = "abandon"  # the region no longer expects it: no result at all


@dataclass(frozen=True, slots=True)
class Stop:
    """A request to stop one run, with the text its result's error carries."""

    kind: StopKind
    reason: str


class _Slot:
    """One run occupying a slot."""

    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.task: asyncio.Task[None] | None = None
        self.entered = False  # its task began executing (a cancel can now reach the executor)
        self.started_at: datetime | None = None
        self.stop: Stop | None = None


class SlotPool:
    """Runs assignments concurrently, never more than ``total`` at a time."""

    def __init__(
        self,
        total: int,
        *,
        on_start: StartListener,
        on_finish: FinishListener,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        guard: GroupGuard | None = None,
        env: tuple[tuple[str, str], ...] | None = None,
        run_as: RunAs | None = None,
    ) -> None:
        """``env`` (None: the worker's own) and ``run_as`` apply to every command."""
        if total < 1:
            raise ValueError(f"a worker needs at least one slot, got {total}")
        self.total = total
        self._on_start = on_start
        self._on_finish = on_finish
        self._output_limit = output_limit
        self._guard = guard
        self._env = env
        self._run_as = run_as
        self._slots: dict[RunKey, _Slot] = {}
        self._group: asyncio.TaskGroup | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> SlotPool:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        group, self._group = self._group, None
        assert group is not None, "SlotPool exited without being entered"
        await group.__aexit__(exc_type, exc, traceback)

    @property
    def in_use(self) -> int:
        """Slots occupied by a run."""
        return len(self._slots)

    @property
    def free(self) -> int:
        """Slots free for a new run."""
        return self.total - len(self._slots)

    @property
    def running(self) -> tuple[RunKey, ...]:
        """The runs occupying slots, in the order they were started."""
        return tuple(self._slots)

    def held(self, run_id: str) -> tuple[RunKey, ...]:
        """The attempts of run ``run_id`` occupying slots (more than one only while the older
        is being stopped)."""
        return tuple(key for key in self._slots if key.run_id == run_id)

    def start(self, assignment: Assignment) -> None:
        """Start ``assignment`` in a free slot; the caller checks ``free`` and ``held`` first."""
        if self._group is None:
            raise RuntimeError("the slot pool is not running")
        if self.free < 1 or assignment.key in self._slots:
            raise RuntimeError(f"no slot for {assignment}: {self.free} free")
        slot = _Slot(assignment)
        self._slots[assignment.key] = slot
        self._idle.clear()
        slot.task = self._group.create_task(self._run(slot), name=f"run-{assignment.key}")

    def stop(self, key: RunKey, stop: Stop) -> int:
        """Stop the attempts of ``key``'s run held under its epoch or an older one.

        Returns how many were stopped: a newer epoch held here is not touched (fencing).
        """
        slots = [slot for held, slot in self._slots.items() if _fenced_by(key, held)]
        for slot in slots:
            self._request_stop(slot, stop)
        return len(slots)

    def stop_all(self, stop: Stop) -> int:
        """Stop every run; returns how many were running."""
        for slot in self._slots.values():
            self._request_stop(slot, stop)
        return len(self._slots)

    async def wait_idle(self) -> None:
        """Return once no run occupies a slot."""
        await self._idle.wait()

    def _request_stop(self, slot: _Slot, stop: Stop) -> None:
        """Cancel the slot's task (once); a task yet to begin sees ``stop`` when it does."""
        if slot.stop is not None:
            return
        slot.stop = stop
        logger.info(
            "%s: stopping (%s)", slot.assignment, stop.reason, extra=slot.assignment.log_fields()
        )
        if slot.entered and slot.task is not None:
            slot.task.cancel()

    async def _run(self, slot: _Slot) -> None:
        """Execute one assignment, free its slot, and hand its result over."""
        slot.entered = True
        try:
            with log_context(**slot.assignment.log_fields()):  # every line of this task
                result = await self._execute(slot)
        finally:
            del self._slots[slot.assignment.key]
            if not self._slots:
                self._idle.set()
        self._on_finish(slot.assignment, result)

    async def _execute(self, slot: _Slot) -> Result | None:
        """The result of running the slot's command, or of stopping it."""
        assignment = slot.assignment
        if slot.stop is not None:
            return _stopped(slot)
        try:
            outcome = await execute(
                replace(assignment.execution, env=self._env),
                self._output_limit,
                on_start=lambda at: self._started(slot, at),
                guard=self._guard,
                run_as=self._run_as,
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if slot.stop is None or task is None:
                raise  # not ours: the pool itself is being torn down
            task.uncancel()
            return _stopped(slot)
        except Exception as error:  # a bug here must not take the other slots down
            logger.exception("%s: the executor failed", assignment)
            return _failed(slot, f"worker error while executing: {error!r}")
        return _finished(slot, outcome)

    def _started(self, slot: _Slot, at: datetime) -> None:
        """Record that the slot's process exists and tell the listener."""
        slot.started_at = at
        logger.info("%s: started", slot.assignment)
        self._on_start(slot.assignment, at)


def _fenced_by(key: RunKey, held: RunKey) -> bool:
    """True when a message about ``key`` applies to the attempt ``held``."""
    return held.run_id == key.run_id and held.epoch <= key.epoch


def _finished(slot: _Slot, outcome: Outcome) -> Result:
    """The result of a command that ran to its end or its timeout."""
    assignment = slot.assignment
    logger.info(
        "%s: %s (exit code %s)%s",
        assignment,
        outcome.state,
        outcome.exit_code,
        f": {outcome.error}" if outcome.error else "",
    )
    return Result(
        key=assignment.key,
        task_id=assignment.task_id,
        state=outcome.state,
        finished_at=outcome.finished_at,
        started_at=slot.started_at,
        exit_code=outcome.exit_code,
        output_tail=outcome.output_tail,
        error=outcome.error,
    )


def _stopped(slot: _Slot) -> Result | None:
    """The result of a run stopped on purpose; None when the region abandoned it."""
    stop = slot.stop
    assert stop is not None
    match stop.kind:
        case StopKind.ABANDON:
            logger.info("%s: stopped, no result reported (%s)", slot.assignment, stop.reason)
            return None
        case StopKind.CANCEL:
            state = RunState.CANCELLED
        case StopKind.SHUTDOWN:
            state = RunState.FAILED
        case unknown:
            assert_never(unknown)
    logger.info("%s: %s (%s)", slot.assignment, state, stop.reason)
    return _failed(slot, stop.reason, state)


def _failed(slot: _Slot, error: str, state: RunState = RunState.FAILED) -> Result:
    """A result without an exit code: the process was killed, or never ran."""
    return Result(
        key=slot.assignment.key,
        task_id=slot.assignment.task_id,
        state=state,
        finished_at=datetime.now(UTC),
        started_at=slot.started_at,
        error=error,
    )
