"""The master's retry policies and pauses."""

from __future__ import annotations

import grpc
import pytest
from pybreaker import CircuitBreakerError

from taskmesh.master.retry_policies import Backoff, is_transient


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    """0.1, 0.2, 0.4, capped at 0.5, back to 0.1 after a success."""
    backoff = Backoff(0.1, 0.5)
    assert [backoff.next_pause() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.next_pause() == pytest.approx(0.1)


@pytest.mark.parametrize(
    "error",
    [CircuitBreakerError("open"), TimeoutError(), ValueError("x"), grpc.RpcError()],
)
def test_only_transient_grpc_call_errors_are_retried(error: BaseException) -> None:
    """An open breaker, a plain exception or an error without a status is not transient."""
    assert not is_transient(error)
