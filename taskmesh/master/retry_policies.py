"""Every retry policy of the master, each naming the exact errors it retries."""

from __future__ import annotations

import grpc
import grpc.aio
from pybreaker import CircuitBreakerError
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_not_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from taskmesh.common.topology import RetryConfig

LEDGER_BACKOFF_MAX = 5.0  # seconds between tries while the ledger is unreachable

# A region that is down, restarting or partitioned; anything else is an answer, not a fault.
TRANSIENT_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


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


class Backoff:
    """Pauses of a loop whose dependency (the ledger) fails: doubling, capped, reset on success."""

    def __init__(self, initial: float, maximum: float) -> None:
        """Start at ``initial`` seconds, never above ``maximum``."""
        self._initial = initial
        self._maximum = maximum
        self._next = initial

    def next_pause(self) -> float:
        """The pause before the next try; each call doubles the one after."""
        pause = self._next
        self._next = min(self._maximum, self._next * 2)
        return pause

    def reset(self) -> None:
        """Start over from the initial pause after a success."""
        self._next = self._initial


def ledger_backoff(initial: float = 0.5) -> Backoff:
    """Pauses of a loop retrying the ledger after ``LedgerUnavailableError`` (and only that)."""
    return Backoff(initial, LEDGER_BACKOFF_MAX)
