"""The region's circuit breakers: one per task kind, one per worker (pybreaker).

Outcomes reach the region after the fact (a result message, a dropped stream), so each one is
recorded as one guarded call, ``with breaker.calling(): raise failure`` or an empty block for
a success, the asyncio-safe form of pybreaker (STYLE.md). pybreaker lets every call through
while half-open; the region gates that itself to one trial run per breaker at a time. A breaker
turns half-open when its trial run is let through (not when its outcome comes back), so the
cluster view shows the trial while it runs; while a trial is out, only its own outcome decides.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from uuid import UUID

import pybreaker

from taskmesh.common import breakers
from taskmesh.common.model import RunState
from taskmesh.common.topology import BreakerConfig, RegionBreakers

KIND_FAILURES = frozenset({RunState.FAILED, RunState.TIMED_OUT})
KIND_SUCCESSES = frozenset({RunState.SUCCEEDED})


class OutcomeFailure(Exception):
    """A failure the region counts against a breaker."""


class ExecutionFailure(OutcomeFailure):
    """A run of the breaker's kind ended failed or timed out."""


class WorkerFailure(OutcomeFailure):
    """The breaker's worker broke its stream, went silent or lost runs."""


class Breaker(breakers.Breaker):
    """A breaker fed with outcomes as they are reported, with one trial run at a time."""

    def __init__(
        self, name: str, config: BreakerConfig, clock: Callable[[], datetime] | None = None
    ) -> None:
        super().__init__(name, config, clock)
        self._trial: UUID | None = None

    @property
    def trial_running(self) -> bool:
        """True while a trial run is out and its outcome not yet counted."""
        return self._trial is not None

    def allows(self) -> bool:
        """True when new work may go through: closed, or due for its one trial."""
        if self.state == pybreaker.STATE_CLOSED:
            return True
        return self._trial is None and self.seconds_to_trial() == 0.0

    def begin(self, run_id: UUID) -> None:
        """Note that ``run_id`` was let through; when not closed, it is the one trial."""
        if self.state == pybreaker.STATE_CLOSED:
            return
        self._trial = run_id
        if self.state == pybreaker.STATE_OPEN:
            self.circuit.half_open()

    def settle(self, run_id: UUID) -> None:
        """``run_id`` left without a counted outcome: free the trial slot if it held it."""
        if self._trial == run_id:
            self._trial = None

    def succeed(self, run_id: UUID | None = None) -> None:
        """Count a success: resets the failure count, closes a half-open breaker."""
        self._record(None, run_id)

    def fail(self, failure: OutcomeFailure, run_id: UUID | None = None) -> None:
        """Count a failure; ``fail_max`` in a row open the breaker."""
        self._record(failure, run_id)

    def _record(self, failure: OutcomeFailure | None, run_id: UUID | None) -> None:
        """One guarded call whose body fails or not; an open breaker ignores it.

        While a trial is out, the outcome of another run (let through before the breaker
        opened, finishing late) is not counted: it says nothing of the downstream now.
        """
        if run_id is not None and self._trial not in (None, run_id):
            return
        self._trial = None
        with (
            contextlib.suppress(pybreaker.CircuitBreakerError, OutcomeFailure),
            self.circuit.calling(),
        ):
            if failure is not None:
                raise failure


class BreakerBoard:
    """Every breaker of one region, created on first use by kind and by worker id."""

    def __init__(self, config: RegionBreakers, clock: Callable[[], datetime] | None = None) -> None:
        self._config = config
        self._clock = clock
        self._kinds: dict[str, Breaker] = {}
        self._workers: dict[str, Breaker] = {}

    def kind(self, kind: str) -> Breaker:
        """The breaker of a task kind."""
        if kind not in self._kinds:
            self._kinds[kind] = Breaker(f"kind:{kind}", self._config.kind, self._clock)
        return self._kinds[kind]

    def worker(self, worker_id: str) -> Breaker:
        """The breaker of a worker; it outlives the worker's streams."""
        if worker_id not in self._workers:
            self._workers[worker_id] = Breaker(
                f"worker:{worker_id}", self._config.worker, self._clock
            )
        return self._workers[worker_id]

    def kind_allows(self, kind: str) -> bool:
        """True when runs of ``kind`` may be assigned now."""
        return self.kind(kind).allows()

    def begin(self, run_id: UUID, kind: str | None, worker_id: str) -> None:
        """Note an assignment on both breakers (it may be their trial)."""
        if kind is not None:
            self.kind(kind).begin(run_id)
        self.worker(worker_id).begin(run_id)

    def settle(self, run_id: UUID, kind: str | None, worker_id: str) -> None:
        """An assignment ended without an outcome either breaker counts."""
        if kind is not None:
            self.kind(kind).settle(run_id)
        self.worker(worker_id).settle(run_id)

    def record_result(
        self, run_id: UUID, kind: str | None, worker_id: str, state: RunState
    ) -> None:
        """Count a result: the worker delivered; the kind succeeded, failed, or neither."""
        self.worker(worker_id).succeed()
        if kind is None:
            return
        if state in KIND_FAILURES:
            self.kind(kind).fail(ExecutionFailure(f"a {kind} run ended {state}"), run_id)
        elif state in KIND_SUCCESSES:
            self.kind(kind).succeed(run_id)
        else:
            self.kind(kind).settle(run_id)

    def record_worker_failure(self, worker_id: str, reason: str) -> None:
        """Count an infrastructure failure of a worker."""
        self.worker(worker_id).fail(WorkerFailure(reason))

    def seconds_to_next_trial(self) -> float | None:
        """Seconds until some open kind breaker admits a trial; None when none is waiting.

        Breakers already due are left out: the assignment round that just ran had its chance
        at them, and new work or credit wakes the next round anyway.
        """
        waits = [b.seconds_to_trial() for b in self._kinds.values() if not b.trial_running]
        return min((w for w in waits if w is not None and w > 0), default=None)

    def kinds(self) -> Iterator[tuple[str, Breaker]]:
        """Every kind breaker seen so far, by kind name."""
        yield from sorted(self._kinds.items())
