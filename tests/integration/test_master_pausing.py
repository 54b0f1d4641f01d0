"""Pausing, resuming and cancelling recurring tasks against a real ledger."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest
from test_master_materialiser import FakeClock, fire, minutely, submit

from taskmesh.common.errors import ConflictError, NotFoundError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    CronSchedule,
    MisfirePolicy,
    OverlapPolicy,
    RunState,
    TaskSpec,
)
from taskmesh.master.materialiser import Materialiser
from taskmesh.master.region_clients import RegionClients
from taskmesh.master.schedule_preview import preview

UNKNOWN = UUID("00000000-0000-4000-8000-000000000000")


async def test_a_paused_schedule_materialises_no_fires(
    ledger: Ledger, clients: RegionClients
) -> None:
    """While paused nothing fires, however many passes run; the task says it is paused."""
    task = await submit(ledger, minutely())
    clock = FakeClock(fire(1) + timedelta(seconds=1))
    materialiser = Materialiser(ledger, clients, clock=clock)
    assert [run.due_at for run in await materialiser.materialise_once()] == [fire(1)]
    paused, cancelled = await ledger.pause_schedule(task.id, clock.now)
    assert paused.paused
    assert cancelled.cancelled == ()  # 12:01 was due before the pause: left alone
    for minute in range(2, 6):
        clock.now = fire(minute) + timedelta(seconds=1)
        assert await materialiser.materialise_once() == []
    assert [run.due_at for run in await ledger.list_runs(task.id)] == [fire(1)]
    assert await ledger.materialise_runs(task.id, [fire(7)], clock.now) == []  # the guard


async def test_pause_cancels_fires_materialised_ahead(
    ledger: Ledger, clients: RegionClients
) -> None:
    """A fire created in the lookahead, not due yet, is cancelled by the pause."""
    task = await submit(ledger, minutely())
    clock = FakeClock(fire(1) - timedelta(seconds=1))
    (ahead,) = await Materialiser(ledger, clients, clock=clock).materialise_once()
    _, cancellation = await ledger.pause_schedule(task.id, clock.now)
    assert [run.id for run in cancellation.cancelled] == [ahead.id]
    assert (await ledger.get_run(ahead.id)).state is RunState.CANCELLED
    again, nothing = await ledger.pause_schedule(task.id, clock.now)  # idempotent
    assert again.paused
    assert nothing.cancelled == ()


async def test_a_replace_racing_a_pause_neither_cancels_nor_creates(
    ledger: Ledger, clients: RegionClients
) -> None:
    """A pass that read the task before the pause must not replace its due fire afterwards."""
    task = await submit(ledger, minutely(OverlapPolicy.REPLACE))
    clock = FakeClock(fire(1) + timedelta(seconds=1))
    (first,) = await Materialiser(ledger, clients, clock=clock).materialise_once()
    await ledger.pause_schedule(task.id, clock.now)
    cancellation, created = await ledger.replace_runs(task.id, fire(2), fire(2))
    assert (cancellation.cancelled, created) == ((), [])
    assert (await ledger.get_run(first.id)).state is RunState.PENDING


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (MisfirePolicy.LATEST, [1, 10]),
        (MisfirePolicy.ALL, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        (MisfirePolicy.NONE, [1]),
    ],
)
async def test_resume_follows_the_misfire_policy(
    ledger: Ledger, clients: RegionClients, policy: MisfirePolicy, expected: list[int]
) -> None:
    """Paused 12:01-12:10, resumed at 12:10:10: the missed fires go as the policy says.

    12:10 is only 10 s late, within the 60 s grace, but it fell due while paused: a misfire too.
    """
    task = await submit(ledger, CronSchedule("* * * * *", "UTC", misfire=policy))
    clock = FakeClock(fire(1) + timedelta(seconds=1))
    materialiser = Materialiser(ledger, clients, clock=clock)
    await materialiser.materialise_once()
    await ledger.pause_schedule(task.id, clock.now)
    clock.now = fire(10) + timedelta(seconds=10)
    assert await materialiser.materialise_once() == []
    resumed = await ledger.resume_schedule(task.id, clock.now)
    assert not resumed.paused
    await materialiser.materialise_once()
    due = [run.due_at for run in await ledger.list_runs(task.id)]
    assert due == [fire(minute) for minute in expected]


async def test_only_recurring_tasks_pause_and_unknown_ones_are_not_found(ledger: Ledger) -> None:
    """A one-shot task has no schedule to pause: a conflict that says what to do instead."""
    once, _, _ = await ledger.submit_task(TaskSpec(name="once", command="true"), fire(0))
    with pytest.raises(ConflictError, match="no cron or interval schedule to pause"):
        await ledger.pause_schedule(once.id, fire(0))
    with pytest.raises(ConflictError, match="to resume"):
        await ledger.resume_schedule(once.id, fire(0))
    with pytest.raises(NotFoundError):
        await ledger.pause_schedule(UNKNOWN, fire(0))


async def test_cancelling_a_recurring_task_stops_its_schedule(
    ledger: Ledger, clients: RegionClients
) -> None:
    """Cancel ends the unfinished fire and pauses the schedule; a second cancel is a conflict."""
    task = await submit(ledger, minutely())
    clock = FakeClock(fire(1) + timedelta(seconds=1))
    materialiser = Materialiser(ledger, clients, clock=clock)
    (first,) = await materialiser.materialise_once()
    cancellation = await ledger.cancel_task(task.id, clock.now)
    assert [run.id for run in cancellation.cancelled] == [first.id]
    assert (await ledger.get_task(task.id)).paused
    clock.now = fire(3) + timedelta(seconds=1)
    assert await materialiser.materialise_once() == []
    with pytest.raises(ConflictError, match="no unfinished runs to cancel"):
        await ledger.cancel_task(task.id, clock.now)
    await ledger.resume_schedule(task.id, clock.now)  # resume is the way back
    created = await materialiser.materialise_once()  # 12:02, 12:03 missed: the latest runs
    assert [run.due_at for run in created] == [fire(3)]


async def test_cancelling_a_schedule_with_no_run_yet_stops_it(ledger: Ledger) -> None:
    """A schedule that has not fired yet has no run to cancel, but its schedule is stopped."""
    task = await submit(ledger, minutely())
    cancellation = await ledger.cancel_task(task.id, fire(0))
    assert cancellation.cancelled == ()
    assert (await ledger.get_task(task.id)).paused


async def test_preview_lists_next_fires_and_none_while_paused(ledger: Ledger) -> None:
    """The next fire times in the schedule's zone, DST included; a paused task shows none."""
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin")
    task = await submit(ledger, schedule)
    (item,) = await ledger.recurring_tasks(include_paused=True)
    shown = preview(item, fire(0), 3)
    assert [f.isoformat() for f in shown.next_fires] == [
        "2026-03-02T01:30:00+00:00",
        "2026-03-03T01:30:00+00:00",
        "2026-03-04T01:30:00+00:00",
    ]
    await ledger.pause_schedule(task.id, fire(0))
    assert await ledger.recurring_tasks() == []
    (paused,) = await ledger.recurring_tasks(include_paused=True)
    assert preview(paused, fire(0), 3).next_fires == ()
