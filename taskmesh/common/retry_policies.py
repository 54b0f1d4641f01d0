"""Every retry policy of every tier, each naming the exact transient errors it retries.

=======================  ==========  ============================================================
policy                   used by     retries
=======================  ==========  ============================================================
``delegation_retrying``  master      ``grpc.aio.AioRpcError`` with UNAVAILABLE or
                                     DEADLINE_EXCEEDED from a call to a region; never past an
                                     open breaker (``CircuitBreakerError``)
``ledger_backoff``       master      ``LedgerUnavailableError`` while connecting to the ledger,
                                     in the dispatcher's loop and in the due-run listener
``ledger_retrying``      region      ``LedgerUnavailableError`` on connecting, writing results
                                     and transitions, and handing runs back
``reconnect_backoff``    worker      every end of its stream to the region: an
                                     ``AioRpcError`` of any code, a ``LinkError`` (no or a wrong
                                     welcome), or a failure while handling a region message
``restart_delay``        taskmesh    a daemon process that exited while the local cluster is
                         up          not stopping
``refusal_park``         master      a run a region refused for good (INVALID, UNSUPPORTED,
                                     ...): parked in ``pending`` for this long, doubling with
                                     each refusal in a row, instead of bouncing every round
=======================  ==========  ============================================================

Not here (yet): the ledger retries each of its own transactions on deadlock and serialization
failures, in ``Ledger._transaction``.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta

import grpc
import grpc.aio
from pybreaker import CircuitBreakerError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.topology import RetryConfig

log = logging.getLogger(__name__)

# A region that is down, restarting or partitioned; anything else is an answer, not a fault.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

LEDGER_BACKOFF_MAX = timedelta(seconds=5)  # master: between tries while the ledger is unreachable
LEDGER_INITIAL_WAIT = 0.05  # region, seconds
LEDGER_MAX_WAIT = 2.0  # region, seconds: an outage is noticed within this once the ledger is back
RECONNECT_INITIAL = timedelta(milliseconds=100)  # worker
RECONNECT_CAP = timedelta(seconds=5)  # worker
MAX_RESTART_DELAY = 10.0  # taskmesh up, seconds
REFUSAL_PARK_INITIAL = timedelta(seconds=1)  # master
REFUSAL_PARK_CAP = timedelta(minutes=5)  # master


def is_transient(error: BaseException) -> bool:
    """True for a gRPC call that failed with UNAVAILABLE or DEADLINE_EXCEEDED."""
    return isinstance(error, grpc.aio.AioRpcError) and error.code() in TRANSIENT_CODES


def delegation_retrying(config: RetryConfig) -> AsyncRetrying:
    """Retries of one call to a region: transient gRPC errors only, never past an open breaker.

    Pauses double from ``initial_backoff`` up to ``max_backoff``, for ``attempts`` tries in all.
    """
    initial = config.initial_backoff.total_seconds()
    maximum = config.max_backoff.total_seconds()
    return AsyncRetrying(
        retry=retry_if_exception(is_transient) & retry_if_not_exception_type(CircuitBreakerError),
        stop=stop_after_attempt(config.attempts),
        wait=wait_exponential(multiplier=initial, min=initial, max=maximum),
        reraise=True,
    )


def ledger_retrying(deadline: float | None = None) -> AsyncRetrying:
    """Retry ``LedgerUnavailableError`` with capped, jittered backoff, forever or ``deadline`` s.

    Writes of results and transitions must never be dropped, so by default this never gives
    up: the region keeps them in memory (and workers keep results in their outboxes) until the
    ledger is back. Shutdown passes a deadline.
    """
    return AsyncRetrying(
        retry=retry_if_exception_type(LedgerUnavailableError),
        wait=wait_exponential(multiplier=LEDGER_INITIAL_WAIT, max=LEDGER_MAX_WAIT)
        + wait_random(0, LEDGER_INITIAL_WAIT),
        stop=stop_never if deadline is None else stop_after_delay(deadline),
        before_sleep=_log_ledger_retry,
        reraise=True,
    )


def _log_ledger_retry(state: RetryCallState) -> None:
    """Log a failed attempt before its backoff."""
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("ledger unavailable (attempt %d), retrying: %s", state.attempt_number, error)


class Backoff:
    """Delays of a retry loop: doubling from ``initial`` up to ``cap``, reset after a success.

    Jittered (the default), each delay is drawn from the upper half of its nominal value, so
    that clients of one server do not retry in lockstep after it restarts.
    """

    def __init__(
        self,
        initial: timedelta = RECONNECT_INITIAL,
        cap: timedelta = RECONNECT_CAP,
        rng: random.Random | None = None,
        *,
        jitter: bool = True,
    ) -> None:
        if initial <= timedelta(0) or cap < initial:
            raise ValueError(f"need 0 < initial <= cap, got initial={initial}, cap={cap}")
        self._initial = initial.total_seconds()
        self._cap = cap.total_seconds()
        self._rng = rng or random.Random()
        self._jitter = jitter
        self.failures = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next try; each call counts one more failure."""
        ceiling = min(self._cap, self._initial * 2 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling) if self._jitter else ceiling

    def reset(self) -> None:
        """Start again from ``initial``: the last try succeeded."""
        self.failures = 0


def ledger_backoff(initial: timedelta = timedelta(seconds=0.5)) -> Backoff:
    """The master's pauses after ``LedgerUnavailableError`` (and only that); no jitter.

    They double from ``initial`` up to ``LEDGER_BACKOFF_MAX``, or stay at ``initial`` when
    that is longer already.
    """
    return Backoff(initial, max(initial, LEDGER_BACKOFF_MAX), jitter=False)


def reconnect_backoff() -> Backoff:
    """The worker's pauses between streams to its region: jittered, and retried forever.

    A worker never gives up on its region, it only waits longer (up to ``RECONNECT_CAP``).
    """
    return Backoff(RECONNECT_INITIAL, RECONNECT_CAP)


def restart_delay(restarts: int) -> float:
    """Seconds before ``taskmesh up`` starts a dead daemon again, its ``restarts``-th time."""
    return min(MAX_RESTART_DELAY, 0.5 * 2.0 ** min(restarts, 5))


def refusal_park(refusals: int) -> timedelta:
    """How long a run refused for good waits before it is offered again.

    ``refusals`` counts its refusals in a row, 1 for the first: 1 s, 2 s, 4 s ... up to 5 min.
    """
    doublings: int = min(max(refusals - 1, 0), 20)
    return min(REFUSAL_PARK_CAP, REFUSAL_PARK_INITIAL * (1 << doublings))
