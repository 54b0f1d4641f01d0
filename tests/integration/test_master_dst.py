"""Daylight saving time through the materialiser and a real ledger, on an injected clock.

The fire-time rules are unit-tested in tests/unit/test_schedules.py; here the whole path runs:
passes of the materialiser at chosen instants around both 2026 transitions in Europe/Berlin
create exactly one run per fire, at the instants the rules promise.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_master_materialiser import FakeClock

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import CronSchedule, MisfirePolicy, TaskSpec
from taskmesh.master.materialiser import Materialiser
from taskmesh.master.region_clients import RegionClients


def utc(text: str) -> datetime:
    """An instant written in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def fires_created(
    ledger: Ledger,
    clients: RegionClients,
    expression: str,
    *,
    created: datetime,
    until: datetime,
    expected: list[datetime],
    step: timedelta,
) -> list[datetime]:
    """Materialise a Berlin cron task every ``step`` and 1 s before each expected fire."""
    schedule = CronSchedule(expression, "Europe/Berlin", misfire=MisfirePolicy.ALL)
    task, _, _ = await ledger.submit_task(
        TaskSpec(name="dst", command="true", schedule=schedule), created
    )
    instants = {created + k * step for k in range(int((until - created) / step) + 1)}
    instants |= {fire - timedelta(seconds=1) for fire in expected}
    clock = FakeClock(created)
    materialiser = Materialiser(ledger, clients, clock=clock)
    for instant in sorted(instants):
        clock.now = instant
        await materialiser.materialise_once()
    return [run.due_at for run in await ledger.list_runs(task.id)]


async def test_a_daily_fire_in_the_spring_gap_runs_once_at_the_end_of_the_gap(
    ledger: Ledger, clients: RegionClients
) -> None:
    """02:30 does not exist on 2026-03-29: that day's run is due at 03:00 CEST (01:00 UTC)."""
    expected = [utc("2026-03-28T01:30"), utc("2026-03-29T01:00"), utc("2026-03-30T00:30")]
    created = await fires_created(
        ledger,
        clients,
        "30 2 * * *",
        created=utc("2026-03-27T23:00"),
        until=utc("2026-03-30T01:00"),
        expected=expected,
        step=timedelta(hours=1),
    )
    assert created == expected


async def test_an_hourly_fire_in_the_repeated_autumn_hour_runs_once(
    ledger: Ledger, clients: RegionClients
) -> None:
    """02:00 happens twice on 2026-10-25: it fires at 02:00 CEST only, not again at 02:00 CET."""
    expected = [
        utc("2026-10-24T23:00"),  # 01:00 CEST
        utc("2026-10-25T00:00"),  # 02:00 CEST, the first 02:00
        utc("2026-10-25T02:00"),  # 03:00 CET (01:00 UTC is the second 02:00: no fire)
        utc("2026-10-25T03:00"),  # 04:00 CET
    ]
    created = await fires_created(
        ledger,
        clients,
        "0 * * * *",
        created=utc("2026-10-24T22:30"),
        until=utc("2026-10-25T03:30"),
        expected=expected,
        step=timedelta(minutes=5),
    )
    assert created == expected
