"""Runs start when they are due, not when a poll comes round: real processes, a 30 s poll.

The master's dispatch interval is 30 s here, so a run that waited for the dispatcher's timer
would start up to 30 s late. Each test first lets one run finish, so the dispatcher has just
finished a round and would sleep a whole interval if nothing woke it; the bounds are generous
(half the interval), to catch a run left waiting for the poll, never to judge speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e_harness import RunningCluster, running_cluster
from test_cluster import eventually

from taskmesh.client import Client
from taskmesh.common.model import AtSchedule, RetryPolicy, Run, RunState, TaskSpec

DISPATCH_INTERVAL = timedelta(seconds=30)
BOUND = DISPATCH_INTERVAL / 2  # a run waiting for the poll would miss it


def pickup_topology(database_url: str) -> dict[str, Any]:
    """One region of one worker; the master polls only every 30 s."""
    return {
        "ledger": {"url": database_url},
        "master": {
            "dispatch_interval": f"{DISPATCH_INTERVAL.total_seconds():g}s",
            "region_heartbeat_timeout": "60s",
        },
        "regions": [
            {
                "name": "solo",
                "capacity": 100,
                "workers": {"count": 1, "slots": 2, "heartbeat_interval": "250ms"},
            },
        ],
    }


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, database_admin: Any, template_database: str
) -> Iterator[RunningCluster]:
    """This module's own cluster (overrides the conftest one)."""
    base = tmp_path_factory.mktemp("pickup")
    with running_cluster(base, database_admin, template_database, pickup_topology) as up:
        yield up


def solo(name: str, **fields: Any) -> TaskSpec:
    """A quick task in the region."""
    return TaskSpec(name=name, command="true", region="solo", **fields)


def finished_run(client: Client, task_id: str, attempts: int = 1) -> Run:
    """The newest attempt once ``attempts`` attempts exist and the newest is terminal."""

    def done() -> Run | None:
        info = client.get(task_id)
        latest = info.latest_run
        if len(info.runs) < attempts or latest is None or not latest.state.is_terminal:
            return None
        return latest

    return eventually(done, timeout=120, what=f"attempt {attempts} of task {task_id}")


def settle(client: Client) -> None:
    """One run through the cluster: the dispatcher has just done a round and now sleeps."""
    task = client.submit_spec(solo("settle")).task
    assert finished_run(client, task.id).state is RunState.SUCCEEDED


def waited(run: Run) -> timedelta:
    """From when the run could start (its due time or the end of its backoff) to its start."""
    assert run.started_at is not None
    return run.started_at - (run.ready_at or run.due_at)


def test_a_run_due_now_starts_without_waiting_for_the_poll(cluster: RunningCluster) -> None:
    with cluster.client() as client:
        settle(client)
        task = client.submit_spec(solo("now")).task
        run = finished_run(client, task.id)
    assert run.state is RunState.SUCCEEDED
    assert waited(run) < BOUND, waited(run)


def test_a_run_scheduled_ahead_starts_at_its_due_time(cluster: RunningCluster) -> None:
    """The dispatcher's timer is set to the next due run, and lowered by a NOTIFY of an earlier
    one: a run due in an hour is known first, then one due in two seconds is submitted."""
    with cluster.client() as client:
        settle(client)
        later = client.submit_spec(solo("later", schedule=AtSchedule(in_seconds(3600)))).task
        soon = client.submit_spec(solo("soon", schedule=AtSchedule(in_seconds(2)))).task
        run = finished_run(client, soon.id)
        client.cancel(later.id, "test over")
    assert run.state is RunState.SUCCEEDED
    assert run.started_at is not None
    assert run.delegated_at is not None
    assert run.delegated_at >= run.due_at  # never before it is due
    assert waited(run) < BOUND, waited(run)


def test_a_retry_starts_when_its_backoff_ends(cluster: RunningCluster) -> None:
    """The region records the failure and the retry; the retry's ready time wakes the master."""
    policy = RetryPolicy(
        max_attempts=2,
        initial_backoff=timedelta(seconds=1),
        max_backoff=timedelta(seconds=1),
        retry_on=frozenset({RunState.FAILED}),
    )
    with cluster.client() as client:
        settle(client)
        task = client.submit_spec(
            TaskSpec(name="flaky", command="exit 1", region="solo", retry=policy)
        ).task
        retry = finished_run(client, task.id, attempts=2)
    assert retry.attempt == 2
    assert retry.state is RunState.FAILED
    assert retry.ready_at is not None
    assert retry.ready_at > retry.due_at  # it had a backoff
    assert waited(retry) < BOUND, waited(retry)


def in_seconds(seconds: float) -> datetime:
    """An instant ``seconds`` from now."""
    return datetime.now(UTC) + timedelta(seconds=seconds)
