"""Fire times of cron and interval schedules: DST in Europe/Berlin, misfires, intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from taskmesh.common.model import CronSchedule, IntervalSchedule, MisfirePolicy
from taskmesh.common.schedules import (
    fires_between,
    fires_to_materialise,
    next_fires,
    recurrence,
)

BERLIN = ZoneInfo("Europe/Berlin")
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def berlin(year: int, month: int, day: int, hour: int, minute: int, *, fold: int = 0) -> datetime:
    """A Berlin wall-clock time as a UTC instant."""
    local = datetime(year, month, day, hour, minute, tzinfo=BERLIN, fold=fold)
    return local.astimezone(UTC)


def berlin_fires(expression: str, start: datetime, end: datetime) -> list[str]:
    """Fire times of ``expression`` in Berlin within (start, end], as local ISO texts."""
    fires = recurrence(CronSchedule(expression, "Europe/Berlin"), CREATED)
    return [fire.astimezone(BERLIN).isoformat() for fire in fires_between(fires, start, end)]


# --- DST, spring forward: 2026-03-29 02:00 CET -> 03:00 CEST ----------------------------------


def test_a_daily_time_in_the_gap_fires_once_at_the_end_of_the_gap() -> None:
    """02:30 does not exist on 29 March: it fires once, at 03:00 CEST; other days as usual."""
    fires = berlin_fires("30 2 * * *", berlin(2026, 3, 28, 0, 0), berlin(2026, 3, 30, 23, 0))
    assert fires == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_hourly_across_the_gap_fires_once_for_the_missing_hour() -> None:
    """The missing 02:00 and the real 03:00 fall on one instant: one fire, not two."""
    fires = berlin_fires("0 * * * *", berlin(2026, 3, 29, 0, 30), berlin(2026, 3, 29, 4, 0))
    assert fires == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]


def test_quarter_hours_in_the_gap_collapse_into_one_fire() -> None:
    """Every quarter hour of the gap maps to 03:00 CEST, which fires once."""
    fires = berlin_fires("*/15 * * * *", berlin(2026, 3, 29, 1, 40), berlin(2026, 3, 29, 3, 20))
    assert fires == [
        "2026-03-29T01:45:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:15:00+02:00",
    ]


# --- DST, fall back: 2026-10-25 03:00 CEST -> 02:00 CET (02:00-02:59 happens twice) -----------


def test_a_daily_time_in_the_repeated_hour_fires_once_at_its_first_occurrence() -> None:
    """02:30 happens twice on 25 October: it fires at 02:30 CEST only."""
    fires = berlin_fires("30 2 * * *", berlin(2026, 10, 24, 0, 0), berlin(2026, 10, 26, 23, 0))
    assert fires == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_hourly_across_the_repeated_hour_fires_its_wall_clock_hours_once() -> None:
    """02:00 fires at its first occurrence (CEST); the repeated 02:00 CET does not fire."""
    fires = berlin_fires("0 * * * *", berlin(2026, 10, 25, 0, 30), berlin(2026, 10, 25, 4, 0))
    assert fires == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T04:00:00+01:00",
    ]


def test_counting_from_inside_the_repeated_hour_does_not_fire_it_again() -> None:
    """After 02:10 CET (the second 02:10), the next 02:30 is the next day's."""
    after = berlin(2026, 10, 25, 2, 10, fold=1)
    schedule = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert next_fires(schedule, CREATED, after, 1) == [berlin(2026, 10, 26, 2, 30)]


def test_latest_fire_seen_from_the_repeated_hour_is_its_first_occurrence() -> None:
    """At 02:45 CET the latest 02:30 fire is the one at 02:30 CEST, an hour and a quarter ago."""
    fires = recurrence(CronSchedule("30 2 * * *", "Europe/Berlin"), CREATED)
    at = berlin(2026, 10, 25, 2, 45, fold=1)
    assert fires.latest_at_or_before(at) == berlin(2026, 10, 25, 2, 30)


def test_latest_fire_seen_just_after_the_gap_is_the_gap_fire() -> None:
    """At 03:00:30 CEST on 29 March the latest 02:30 fire is the one at 03:00."""
    fires = recurrence(CronSchedule("30 2 * * *", "Europe/Berlin"), CREATED)
    at = berlin(2026, 3, 29, 3, 0) + timedelta(seconds=30)
    assert fires.latest_at_or_before(at) == berlin(2026, 3, 29, 3, 0)


def test_materialising_across_both_transitions_never_repeats_a_fire() -> None:
    """Hourly Berlin fires for the whole year, taken 50 at a time, are strictly increasing."""
    schedule = CronSchedule("0 * * * *", "Europe/Berlin", misfire=MisfirePolicy.ALL)
    created, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    found: list[datetime] = []
    while True:
        batch = fires_to_materialise(
            schedule,
            created_at=created,
            last_fire=found[-1] if found else None,
            now=end,
            horizon=timedelta(0),
            limit=500,
        )
        if not batch:
            break
        found.extend(batch)
    assert found == sorted(set(found))
    # Every UTC hour of the year fires (the March gap's fire is 03:00 CEST = 01:00 UTC) except
    # 01:00 UTC on 25 October: the second 02:00, which does not fire again.
    hours = {created + timedelta(hours=h) for h in range(365 * 24 + 1)}
    assert hours - set(found) == {datetime(2026, 10, 25, 1, 0, tzinfo=UTC)}
    assert set(found) <= hours


# --- misfires ----------------------------------------------------------------------------------


def every_minute(policy: MisfirePolicy) -> CronSchedule:
    """A UTC every-minute schedule with the given misfire policy."""
    return CronSchedule("* * * * *", "UTC", misfire=policy)


def materialise(
    policy: MisfirePolicy, last_fire: datetime | None, horizon: float = 0
) -> list[datetime]:
    """The fires to create at ``NOW`` for an every-minute schedule."""
    return fires_to_materialise(
        every_minute(policy),
        created_at=CREATED,
        last_fire=last_fire,
        now=NOW,
        horizon=timedelta(seconds=horizon),
    )


def minutes_before_now(*minutes: int) -> list[datetime]:
    """Instants whole minutes before ``NOW``."""
    return [NOW - timedelta(minutes=m) for m in minutes]


def test_misfire_all_materialises_every_missed_fire() -> None:
    """Down for five minutes: the four missed fires, then the one within the grace."""
    assert materialise(MisfirePolicy.ALL, NOW - timedelta(minutes=5)) == minutes_before_now(
        4, 3, 2, 1, 0
    )


def test_misfire_latest_materialises_only_the_most_recent_missed_fire() -> None:
    """Of the missed fires only the last; the fire within the grace as well."""
    assert materialise(MisfirePolicy.LATEST, NOW - timedelta(minutes=5)) == minutes_before_now(1, 0)


def test_misfire_none_skips_missed_fires_and_continues_from_now() -> None:
    """No missed fire at all; the fire within the grace and those ahead still come."""
    assert materialise(MisfirePolicy.NONE, NOW - timedelta(minutes=5), horizon=60) == [
        NOW,
        NOW + timedelta(minutes=1),
    ]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(MisfirePolicy.ALL, [3, 2, 1, 0]), (MisfirePolicy.LATEST, [0]), (MisfirePolicy.NONE, [])],
)
def test_fires_due_while_paused_are_misfires_even_within_the_grace(
    policy: MisfirePolicy, expected: list[int]
) -> None:
    """Paused after the fire 4 minutes ago, resumed now: the fires since then are all missed."""
    fires = fires_to_materialise(
        every_minute(policy),
        created_at=CREATED,
        last_fire=NOW - timedelta(minutes=4),
        now=NOW + timedelta(seconds=5),
        horizon=timedelta(seconds=1),
        missed_until=NOW + timedelta(seconds=5),
    )
    assert fires == minutes_before_now(*expected)


@pytest.mark.parametrize("policy", list(MisfirePolicy))
def test_without_downtime_every_policy_materialises_the_same(policy: MisfirePolicy) -> None:
    """A master that kept up sees no misfire: the next fires within the horizon."""
    last = NOW - timedelta(seconds=30)
    assert materialise(policy, last, horizon=120) == [
        NOW,
        NOW + timedelta(minutes=1),
        NOW + timedelta(minutes=2),
    ]


def test_fire_times_before_the_tasks_creation_are_not_misfires() -> None:
    """A daily task created at noon does not fire for the midnight before it existed."""
    schedule = CronSchedule("0 0 * * *", "UTC", misfire=MisfirePolicy.ALL)
    assert (
        fires_to_materialise(
            schedule, created_at=NOW, last_fire=None, now=NOW, horizon=timedelta(hours=1)
        )
        == []
    )


def test_misfire_all_is_worked_off_in_bounded_batches() -> None:
    """A long backlog comes ``limit`` fires at a time, oldest first, with no gap."""
    schedule = every_minute(MisfirePolicy.ALL)
    first = fires_to_materialise(
        schedule, created_at=CREATED, last_fire=None, now=NOW, horizon=timedelta(0), limit=10
    )
    assert first == [CREATED + timedelta(minutes=m) for m in range(10)]


# --- interval ----------------------------------------------------------------------------------


def test_interval_fires_at_start_plus_multiples_of_every() -> None:
    """start_at + k·every, the start itself included."""
    start = datetime(2026, 6, 1, 11, 0, tzinfo=UTC)
    schedule = IntervalSchedule(timedelta(minutes=20), start_at=start)
    fires = fires_to_materialise(
        schedule, created_at=start, last_fire=None, now=NOW, horizon=timedelta(minutes=30)
    )
    assert fires[0] == NOW - timedelta(minutes=20)  # LATEST kept only the last missed one
    assert fires == [start + timedelta(minutes=20 * k) for k in (2, 3, 4)]


def test_interval_without_start_counts_from_creation() -> None:
    """No start_at: the first fire is at creation, then every ``every``."""
    schedule = IntervalSchedule(timedelta(seconds=90))
    assert next_fires(schedule, NOW, NOW - timedelta(days=1), 3) == [
        NOW,
        NOW + timedelta(seconds=90),
        NOW + timedelta(seconds=180),
    ]


def test_interval_continues_after_the_last_fire_on_its_grid() -> None:
    """From a last fire on, the next fires stay on start + k·every."""
    start = datetime(2026, 6, 1, 11, 0, 7, tzinfo=UTC)
    schedule = IntervalSchedule(timedelta(minutes=5), start_at=start)
    fires = fires_to_materialise(
        schedule,
        created_at=start,
        last_fire=start + timedelta(minutes=55),
        now=NOW,
        horizon=timedelta(minutes=6),
    )
    assert fires == [NOW + timedelta(seconds=7), NOW + timedelta(seconds=307)]


def test_interval_counts_elapsed_time_across_dst() -> None:
    """Every 24 hours is 24 hours, even over the spring-forward night."""
    start = berlin(2026, 3, 28, 12, 0)
    schedule = IntervalSchedule(timedelta(days=1), start_at=start)
    (fire,) = next_fires(schedule, start, start, 1)
    assert fire.astimezone(BERLIN).isoformat() == "2026-03-29T13:00:00+02:00"


def test_interval_before_its_start_has_no_latest_fire() -> None:
    """Nothing fired before start_at."""
    start = NOW + timedelta(hours=1)
    fires = recurrence(IntervalSchedule(timedelta(minutes=1), start_at=start), CREATED)
    assert fires.latest_at_or_before(NOW) is None
    assert fires.next_after(NOW) == start
