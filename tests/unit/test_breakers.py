"""The shared breaker: snapshots for the cluster view, a log line on every state change."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from pybreaker import CircuitBreakerError

from taskmesh.common.breakers import Breaker
from taskmesh.common.rpc import cluster_pb2
from taskmesh.common.rpc.cluster import breaker_to_proto
from taskmesh.common.topology import BreakerConfig
from taskmesh.master.dashboard.region_json import region_json

QUICK = BreakerConfig(fail_max=2, reset_timeout=timedelta(milliseconds=200))


class Boom(Exception):
    """A failure."""


def fail(breaker: Breaker) -> None:
    """One failed call through the breaker."""
    with pytest.raises((Boom, CircuitBreakerError)), breaker.circuit.calling():
        raise Boom


def succeed(breaker: Breaker) -> None:
    """One successful call through the breaker."""
    with breaker.circuit.calling():
        pass


def test_snapshot_reports_failures_opening_and_trial_time() -> None:
    breaker = Breaker("region:eu", QUICK)
    fail(breaker)
    closed = breaker.snapshot()
    assert (closed.state, closed.failures, closed.opened_at, closed.trial_at) == (
        "closed",
        1,
        None,
        None,
    )
    before = datetime.now(UTC)
    fail(breaker)
    opened = breaker.snapshot()
    assert (opened.state, opened.failures) == ("open", 2)
    assert opened.opened_at is not None
    assert before <= opened.opened_at <= datetime.now(UTC)
    assert opened.trial_at == opened.opened_at + timedelta(milliseconds=200)
    wire = breaker_to_proto(opened)
    assert wire.state == cluster_pb2.BREAKER_STATE_OPEN
    assert wire.opened_at.ToDatetime(UTC) == opened.opened_at
    time.sleep(0.25)
    succeed(breaker)
    assert breaker.snapshot().state == "closed"
    assert not breaker_to_proto(breaker.snapshot()).HasField("opened_at")


def test_every_state_change_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskmesh.common.breakers")
    breaker = Breaker("kind:flaky", QUICK)
    fail(breaker)
    fail(breaker)
    time.sleep(0.25)
    succeed(breaker)
    changes = [r.getMessage() for r in caplog.records if r.name == "taskmesh.common.breakers"]
    assert changes == [
        "breaker kind:flaky: closed -> open after 2 consecutive failures",
        "breaker kind:flaky: open -> half-open after 2 consecutive failures",
        "breaker kind:flaky: half-open -> closed after 0 consecutive failures",
    ]
    opened = next(r for r in caplog.records if "-> open" in r.getMessage())
    assert opened.levelno == logging.WARNING


def test_rest_region_shape_has_one_breaker_object_everywhere() -> None:
    opened = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    breaker = cluster_pb2.BreakerStatus(state=cluster_pb2.BREAKER_STATE_OPEN, failures=3)
    breaker.opened_at.FromDatetime(opened)
    breaker.trial_at.FromDatetime(opened + timedelta(seconds=30))
    region = cluster_pb2.RegionStatus(
        name="eu",
        breaker=cluster_pb2.BREAKER_STATE_OPEN,
        breaker_status=breaker,
        kind_breakers=[
            cluster_pb2.KindBreaker(
                kind="etl", state=cluster_pb2.BREAKER_STATE_HALF_OPEN, failures=5, waiting=4
            )
        ],
        workers=[
            cluster_pb2.WorkerStatus(
                id="w1",
                breaker_status=cluster_pb2.BreakerStatus(state=cluster_pb2.BREAKER_STATE_CLOSED),
            )
        ],
        spilled_out=2,
        spillover_window_seconds=300,
        fallbacks=["us"],
    )
    body = region_json(region)
    assert body["breaker"] == {
        "state": "open",
        "failures": 3,
        "opened_at": "2026-11-23T12:00:00Z",
        "trial_at": "2026-11-23T12:00:30Z",
    }
    assert body["kinds"] == [
        {
            "kind": "etl",
            "state": "half_open",
            "failures": 5,
            "opened_at": None,
            "trial_at": None,
            "waiting": 4,
        }
    ]
    assert body["workers"][0]["breaker"]["state"] == "closed"
    assert body["spillover"] == {"in": 0, "out": 2, "window_seconds": 300}
    assert body["fallbacks"] == ["us"]
    assert "breaker_status" not in body
    assert "kind_breakers" not in body
