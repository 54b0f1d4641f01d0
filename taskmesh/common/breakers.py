"""Circuit breakers (pybreaker) as every daemon keeps them: named, logged, and observable.

The master keeps one per region around delegation; a region one per worker and one per task
kind. Each is a pybreaker breaker over its own memory storage, so its state, consecutive
failure count and opening time can be reported (``snapshot``), and every state change is logged
by a listener: an operator wants to know the moment a region, worker or kind is cut off.
Callers guard awaited work with ``with breaker.calling(): await ...`` (STYLE.md): decorating a
coroutine would count every call a success. Cancellation is never a failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pybreaker

from taskmesh.common.topology import BreakerConfig

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = pybreaker.STATE_CLOSED, pybreaker.STATE_OPEN, pybreaker.STATE_HALF_OPEN


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker as reported: state, consecutive failures, when it opened and when it tries."""

    state: str  # ``closed``, ``open`` or ``half-open`` (pybreaker's names)
    failures: int
    opened_at: datetime | None = None  # when it last opened; None unless open or half-open
    trial_at: datetime | None = None  # when an open breaker lets its trial through


class StateLogger(pybreaker.CircuitBreakerListener):
    """Logs every state change of the breakers it listens to."""

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        """Log ``cb``'s move to ``new_state``, at WARNING when it opens."""
        old = old_state.name if old_state is not None else "none"
        level = logging.WARNING if new_state.name == OPEN else logging.INFO
        log.log(
            level,
            "breaker %s: %s -> %s after %d consecutive failures",
            cb.name,
            old,
            new_state.name,
            cb.fail_counter,
        )


class Breaker:
    """One named pybreaker breaker with its storage, so its state can be reported."""

    def __init__(
        self, name: str, config: BreakerConfig, clock: Callable[[], datetime] | None = None
    ) -> None:
        """Open after ``config.fail_max`` failures in a row, try again ``reset_timeout`` later."""
        self.name = name
        self._storage = pybreaker.CircuitMemoryStorage(CLOSED)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=config.fail_max,
            reset_timeout=config.reset_timeout.total_seconds(),
            exclude=[asyncio.CancelledError],
            listeners=[StateLogger()],
            state_storage=self._storage,
            name=name,
        )
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open`` (pybreaker's names)."""
        return str(self._breaker.current_state)

    @property
    def failures(self) -> int:
        """Consecutive failures counted so far."""
        return int(self._breaker.fail_counter)

    @property
    def circuit(self) -> pybreaker.CircuitBreaker:
        """The pybreaker breaker itself: ``with breaker.circuit.calling(): await ...``."""
        return self._breaker

    def seconds_to_trial(self) -> float | None:
        """Seconds until an open breaker admits a trial (0 when due), None when not open."""
        if self.state == HALF_OPEN:
            return 0.0
        opened_at = self._storage.opened_at
        if self.state != OPEN or opened_at is None:
            return None
        waited = (self._clock() - opened_at).total_seconds()
        return max(0.0, self._breaker.reset_timeout - waited)

    def snapshot(self) -> BreakerSnapshot:
        """The breaker as reported in the cluster view."""
        state = self.state
        if state == CLOSED:
            return BreakerSnapshot(state, self.failures)
        opened_at = self._storage.opened_at
        trial_at = None
        if opened_at is not None:
            trial_at = opened_at + timedelta(seconds=self._breaker.reset_timeout)
        return BreakerSnapshot(state, self.failures, opened_at, trial_at)
