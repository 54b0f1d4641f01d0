"""The reconnect backoff: doubling, capped, jittered, reset after a success."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from taskmesh.worker.backoff import Backoff


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
