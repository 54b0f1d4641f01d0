"""Every retry policy of the region daemon, each naming the exact transient errors it retries."""

from __future__ import annotations

import logging

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_random,
)

from taskmesh.common.errors import LedgerUnavailableError

log = logging.getLogger(__name__)

LEDGER_INITIAL_WAIT = 0.05  # seconds
LEDGER_MAX_WAIT = 2.0  # seconds: an outage is noticed within this once the ledger is back


def _log_retry(state: RetryCallState) -> None:
    """Log a failed attempt before its backoff."""
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("ledger unavailable (attempt %d), retrying: %s", state.attempt_number, error)


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
        before_sleep=_log_retry,
        reraise=True,
    )
