"""Every retry policy: what it retries, what it lets through at once, and how long it waits."""

from __future__ import annotations

import random
from datetime import timedelta

import grpc
import grpc.aio
import pytest
from pybreaker import CircuitBreakerError
from tenacity import AsyncRetrying

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.retry_policies import (
    Backoff,
    delegation_retrying,
    is_transient,
    ledger_backoff,
    ledger_retrying,
    reconnect_backoff,
    restart_delay,
)
from taskmesh.common.topology import RetryConfig


class Flaky:
    """A call that raises each of ``errors`` in turn, then returns ``"ok"``."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def run_with(retrying: AsyncRetrying, call: Flaky) -> tuple[str, list[float]]:
    """``call`` under ``retrying`` without real sleeps; its answer and the pauses asked for."""
    pauses: list[float] = []

    async def sleep(seconds: float) -> None:
        pauses.append(seconds)

    async for attempt in retrying.copy(sleep=sleep):
        with attempt:
            return await call(), pauses
    raise AssertionError("unreachable: tenacity re-raises the last error")


def rpc_error(code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    """A failed gRPC call with status ``code``."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), "details")


# --- the master's calls to regions ------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [CircuitBreakerError("open"), TimeoutError(), ValueError("x"), grpc.RpcError()],
)
def test_only_transient_grpc_call_errors_are_retried(error: BaseException) -> None:
    """An open breaker, a plain exception or an error without a status is not transient."""
    assert not is_transient(error)


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (grpc.StatusCode.UNAVAILABLE, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, True),
        (grpc.StatusCode.INVALID_ARGUMENT, False),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, False),
    ],
)
def test_a_region_that_is_down_or_slow_is_transient(code: grpc.StatusCode, transient: bool) -> None:
    """Any other status is the region's answer."""
    assert is_transient(rpc_error(code)) is transient


async def test_delegation_retries_transient_errors_for_its_attempts() -> None:
    """Pauses double from the initial backoff; the last error is re-raised as it was."""
    config = RetryConfig(attempts=3, initial_backoff=timedelta(seconds=1))
    call = Flaky(*[rpc_error(grpc.StatusCode.UNAVAILABLE)] * 3)
    with pytest.raises(grpc.aio.AioRpcError):
        await run_with(delegation_retrying(config), call)
    assert call.calls == 3
    recovering = Flaky(rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED))
    assert await run_with(delegation_retrying(config), recovering) == ("ok", [1.0])


@pytest.mark.parametrize(
    "error", [CircuitBreakerError("open"), rpc_error(grpc.StatusCode.INVALID_ARGUMENT)]
)
async def test_delegation_never_retries_past_an_open_breaker_or_an_answer(
    error: BaseException,
) -> None:
    """One call, and its error."""
    call = Flaky(error)
    with pytest.raises(type(error)):
        await run_with(delegation_retrying(RetryConfig()), call)
    assert call.calls == 1


# --- the region's ledger writes ----------------------------------------------------------------


async def test_the_region_retries_an_unavailable_ledger_until_it_answers() -> None:
    """Jittered pauses, each within its doubling bound."""
    call = Flaky(*[LedgerUnavailableError("down")] * 4)
    answer, pauses = await run_with(ledger_retrying(), call)
    assert answer == "ok"
    assert len(pauses) == 4
    for pause, nominal in zip(pauses, [0.05, 0.1, 0.2, 0.4], strict=True):
        assert nominal <= pause <= nominal + 0.05


async def test_the_region_gives_up_on_the_ledger_at_its_deadline() -> None:
    """Shutdown passes a deadline; past it the error is re-raised."""
    call = Flaky(*[LedgerUnavailableError("down")] * 2)
    with pytest.raises(LedgerUnavailableError):
        await run_with(ledger_retrying(deadline=0.0), call)
    assert call.calls == 1


async def test_the_region_does_not_retry_other_ledger_errors() -> None:
    """A refused write is an answer, not an outage."""
    call = Flaky(ValueError("refused"))
    with pytest.raises(ValueError, match="refused"):
        await run_with(ledger_retrying(), call)
    assert call.calls == 1


# --- backoffs of loops: the master's ledger loops, the worker's reconnects ---------------------


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    """0.1, 0.2, 0.4, capped at 0.5, back to 0.1 after a success."""
    backoff = Backoff(timedelta(seconds=0.1), timedelta(seconds=0.5), jitter=False)
    assert [backoff.next_delay() for _ in range(5)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_delays_double_up_to_the_cap_within_the_upper_half() -> None:
    backoff = Backoff(timedelta(milliseconds=100), timedelta(seconds=5), random.Random(7))
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
    for ceiling in ceilings:
        delay = backoff.next_delay()
        assert ceiling / 2 <= delay <= ceiling
    assert backoff.failures == len(ceilings)


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(timedelta(milliseconds=100), timedelta(seconds=5))
    for _ in range(10):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_many_failures_never_overflow() -> None:
    backoff = Backoff()
    for _ in range(10_000):
        assert backoff.next_delay() <= 5.0


def test_jitter_spreads_workers_apart() -> None:
    delays = {Backoff(rng=random.Random(seed)).next_delay() for seed in range(20)}
    assert len(delays) == 20


@pytest.mark.parametrize(
    ("initial", "cap"),
    [(timedelta(0), timedelta(seconds=1)), (timedelta(seconds=2), timedelta(seconds=1))],
)
def test_nonsense_bounds_are_refused(initial: timedelta, cap: timedelta) -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(initial, cap)


def test_the_masters_ledger_pauses_double_to_five_seconds_without_jitter() -> None:
    """From 0.5 s by default; the same every time."""
    backoff = ledger_backoff()
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_dispatch_interval_above_the_cap_is_the_pause() -> None:
    """A dispatcher never pauses shorter after a failure than between rounds."""
    backoff = ledger_backoff(timedelta(seconds=8))
    assert [backoff.next_delay() for _ in range(3)] == [8.0, 8.0, 8.0]


def test_the_worker_reconnects_with_jitter_up_to_five_seconds() -> None:
    """Never more than the cap, never less than half the nominal delay."""
    backoff = reconnect_backoff()
    first = backoff.next_delay()
    assert 0.05 <= first <= 0.1
    assert max(backoff.next_delay() for _ in range(50)) <= 5.0


# --- taskmesh up ------------------------------------------------------------------------------


def test_a_dead_daemon_is_restarted_after_doubling_delays_up_to_ten_seconds() -> None:
    """The first restart waits 1 s."""
    assert [restart_delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
