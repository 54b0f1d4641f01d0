"""The materialiser against a real ledger: one run per fire, races, forbid and replace."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from test_master_harness import eventually, fake_regions, make_topology, running_master

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    CronSchedule,
    IntervalSchedule,
    MisfirePolicy,
    OverlapPolicy,
    Placement,
    Run,
    RunState,
    Schedule,
    Task,
    TaskSpec,
    Transition,
)
from taskmesh.master.materialiser import Materialiser
from taskmesh.master.region_clients import RegionClients

T0 = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        """Start at ``now``."""
        self.now = now

    def __call__(self) -> datetime:
        """The current instant."""
        return self.now


async def submit(ledger: Ledger, schedule: Schedule, **fields: Any) -> Task:
    """Store a recurring task created at ``T0``."""
    spec = TaskSpec(name="recurring", command="true", schedule=schedule, **fields)
    task, first, created = await ledger.submit_task(spec, T0)
    assert created
    assert first is None  # recurring tasks get their runs from the materialiser
    return task


def minutely(overlap: OverlapPolicy = OverlapPolicy.ALLOW) -> CronSchedule:
    """Every minute, UTC."""
    return CronSchedule("* * * * *", "UTC", overlap=overlap)


def fire(minutes: int) -> datetime:
    """The fire time ``minutes`` after 12:00 on the test day."""
    return datetime(2026, 3, 1, 12, minutes, tzinfo=UTC)


async def finish(ledger: Ledger, run: Run, at: datetime) -> None:
    """Claim a pending run into region eu and take it to succeeded at ``at``."""
    claimed = await ledger.claim_due_runs({"eu": 10}, at)
    assert [item.run_id for item in claimed] == [run.id]
    current = await ledger.get_run(run.id)
    for target in (RunState.ASSIGNED, RunState.RUNNING, RunState.SUCCEEDED):
        transition = Transition(current.id, current.epoch, target, at, worker_id="w1")
        (outcome,) = await ledger.record_transitions([transition])
        assert outcome.applied
        assert outcome.run is not None
        current = outcome.run


async def test_recurring_tasks_lists_schedules_with_their_latest_fire(ledger: Ledger) -> None:
    """One query: cron and interval tasks only, with the latest fire and how it stands."""
    cron = await submit(ledger, minutely())
    interval = await submit(ledger, IntervalSchedule(timedelta(seconds=10)))
    await ledger.submit_task(TaskSpec(name="once", command="true"), T0)
    await ledger.materialise_runs(cron.id, [fire(1), fire(2)], T0)
    listed = {item.task.id: item for item in await ledger.recurring_tasks()}
    assert set(listed) == {cron.id, interval.id}
    assert listed[cron.id].last_due_at == fire(2)
    assert listed[cron.id].unfinished
    assert listed[interval.id].last_due_at is None
    assert not listed[interval.id].unfinished


async def test_a_cron_task_gets_exactly_one_run_per_fire(
    ledger: Ledger, clients: RegionClients
) -> None:
    """Passes at any pace create each fire once, shortly before it is due."""
    task = await submit(ledger, minutely())
    clock = FakeClock(T0)
    materialiser = Materialiser(ledger, clients, clock=clock)
    assert await materialiser.materialise_once() == []  # 12:01 is 30 s away
    for offset in (29.0, 29.5, 30.0, 45.0, 89.0, 90.0, 149.5):
        clock.now = T0 + timedelta(seconds=offset)
        await materialiser.materialise_once()
    runs = await ledger.list_runs(task.id)
    assert [run.due_at for run in runs] == [fire(1), fire(2), fire(3)]
    assert all(run.state is RunState.PENDING and run.attempt == 1 for run in runs)
    assert runs[0].created_at == T0 + timedelta(seconds=29)  # a lookahead of 2 s


async def test_after_downtime_latest_fires_the_most_recent_missed_fire_once(
    ledger: Ledger, clients: RegionClients
) -> None:
    """Back at 12:12:10: of 12:01-12:11 only 12:11; 12:12 is 10 s late, within the grace."""
    task = await submit(ledger, minutely())
    clock = FakeClock(fire(12) + timedelta(seconds=10))
    materialiser = Materialiser(ledger, clients, clock=clock)
    created = await materialiser.materialise_once()
    assert [run.due_at for run in created] == [fire(11), fire(12)]
    clock.now = fire(12) + timedelta(seconds=58)
    assert [run.due_at for run in await materialiser.materialise_once()] == [fire(13)]
    assert [run.due_at for run in await ledger.list_runs(task.id)] == [fire(11), fire(12), fire(13)]


async def test_two_materialisers_racing_without_the_lock_create_no_duplicate_fire(
    ledger: Ledger, database_url: str
) -> None:
    """Two ledgers, two materialisers, concurrent passes: every fire exists exactly once."""
    schedule = CronSchedule("* * * * *", "UTC", misfire=MisfirePolicy.ALL)
    tasks = [await submit(ledger, schedule) for _ in range(10)]
    other = await Ledger.connect(database_url, pool_size=4)
    topology = make_topology(("eu",))
    first = RegionClients.for_topology(topology, {}, "master-a")
    second = RegionClients.for_topology(topology, {}, "master-b")
    try:
        clock = FakeClock(fire(30))
        racers = [
            Materialiser(ledger, first, clock=clock),
            Materialiser(other, second, clock=clock),
        ]
        created: list[Run] = []
        for step in range(5):
            clock.now = fire(30) + timedelta(seconds=20 * step)
            for batch in await asyncio.gather(*(m.materialise_once() for m in racers)):
                created.extend(batch)
    finally:
        await other.close()
        await first.close()
        await second.close()
    expected = [fire(m) for m in range(1, 32)]  # 12:01 ... 12:31 (within the lookahead)
    for task in tasks:
        assert [run.due_at for run in await ledger.list_runs(task.id)] == expected
    assert len(created) == len(tasks) * len(expected)  # each fire reported by one racer


async def test_forbid_skips_fires_while_the_previous_run_is_unfinished(
    ledger: Ledger, clients: RegionClients
) -> None:
    """12:02 comes while the 12:01 run is unfinished: skipped for good; 12:03 fires."""
    task = await submit(ledger, minutely(OverlapPolicy.FORBID))
    clock = FakeClock(fire(1) + timedelta(seconds=1))
    materialiser = Materialiser(ledger, clients, clock=clock)
    (first,) = await materialiser.materialise_once()
    assert first.due_at == fire(1)
    clock.now = fire(2) + timedelta(seconds=1)
    assert await materialiser.materialise_once() == []  # 12:01 is still pending
    await finish(ledger, first, fire(2) + timedelta(seconds=20))
    clock.now = fire(2) + timedelta(seconds=40)
    assert await materialiser.materialise_once() == []  # 12:02 came while 12:01 ran
    clock.now = fire(3) + timedelta(seconds=1)
    (third,) = await materialiser.materialise_once()
    assert third.due_at == fire(3)
    assert [run.due_at for run in await ledger.list_runs(task.id)] == [fire(1), fire(3)]


async def test_forbid_materialises_only_when_due(ledger: Ledger, clients: RegionClients) -> None:
    """No lookahead under forbid: the previous run is judged at the fire time."""
    await submit(ledger, minutely(OverlapPolicy.FORBID))
    materialiser = Materialiser(ledger, clients, clock=lambda: fire(1) - timedelta(seconds=1))
    assert await materialiser.materialise_once() == []


async def test_replace_cancels_the_previous_pending_run(
    ledger: Ledger, clients: RegionClients
) -> None:
    """12:02 cancels the still pending 12:01 run and takes its place."""
    task = await submit(ledger, minutely(OverlapPolicy.REPLACE))
    clock = FakeClock(fire(1) + timedelta(seconds=1))
    materialiser = Materialiser(ledger, clients, clock=clock)
    (first,) = await materialiser.materialise_once()
    clock.now = fire(2) + timedelta(seconds=1)
    (second,) = await materialiser.materialise_once()
    assert second.due_at == fire(2)
    assert second.state is RunState.PENDING
    replaced = await ledger.get_run(first.id)
    assert replaced.state is RunState.CANCELLED
    assert replaced.finished_at == clock.now
    events = await ledger.events_after(0)
    causes = [event.detail.get("cause") for event in events if event.run_id == first.id]
    assert causes == [None, "overlap_replace"]
    assert [run.id for run in await ledger.list_runs(task.id)] == [first.id, second.id]


async def test_replace_forwards_the_cancel_of_an_in_flight_run(ledger: Ledger) -> None:
    """A delegated previous run is not cancelled in the ledger but forwarded to its region."""
    topology = make_topology(("eu",))
    async with fake_regions("eu") as regions:
        clients = RegionClients.for_topology(topology, {"eu": regions["eu"].address}, "m")
        try:
            schedule = minutely(OverlapPolicy.REPLACE)
            await submit(ledger, schedule, region="eu", placement=Placement.STRICT)
            clock = FakeClock(fire(1) + timedelta(seconds=1))
            materialiser = Materialiser(ledger, clients, clock=clock)
            (first,) = await materialiser.materialise_once()
            assert len(await ledger.claim_due_runs({"eu": 10}, clock.now)) == 1
            clock.now = fire(2) + timedelta(seconds=1)
            (second,) = await materialiser.materialise_once()
        finally:
            await clients.close()
        assert regions["eu"].cancelled == [str(first.id)]
    assert (await ledger.get_run(first.id)).state is RunState.DELEGATED  # the region decides
    assert second.due_at == fire(2)


async def test_a_running_master_materialises_an_interval_task(ledger: Ledger) -> None:
    """The duty runs in the master: a 1-second interval task keeps getting runs."""
    now = datetime.now(UTC)
    spec = TaskSpec(name="tick", command="true", schedule=IntervalSchedule(timedelta(seconds=1)))
    task, _, _ = await ledger.submit_task(spec, now)

    async def several_runs() -> bool:
        return len(await ledger.list_runs(task.id)) >= 3

    async with running_master(make_topology(("eu",)), ledger):
        await eventually(several_runs, within=10)
    due = [run.due_at for run in await ledger.list_runs(task.id)]
    assert due == [now + timedelta(seconds=k) for k in range(len(due))]
