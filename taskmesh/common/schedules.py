"""Fire times of recurring schedules: which runs a cron or interval task should have.

Pure functions of their arguments (no clock, no I/O), so the master's materialiser, a preview
such as ``taskmesh schedule --next N`` and the tests all agree, and ``now`` can be anywhere.

**Cron and daylight saving time.** A cron expression is matched against the wall clock of its
IANA zone, then each matching wall-clock time becomes one instant:

- a wall-clock time that does not exist (the spring-forward gap) fires once, at the first
  instant after the gap (``30 2 * * *`` in Europe/Berlin on 2026-03-29 fires at 03:00 CEST);
  several matches inside one gap (``0 * * * *``, ``*/15 * * * *``) and the first match after
  it all fall on that one instant, so together they fire once;
- a wall-clock time that occurs twice (the fall-back repetition) fires once, at its first
  occurrence (``30 2 * * *`` on 2026-10-25 fires at 02:30 CEST, not again at 02:30 CET).

**Interval.** Fires at ``start_at + k·every`` (``start_at`` defaulting to the task's creation),
counted in elapsed time: ``every=1 day`` is 24 hours, whatever the wall clock does.

**Misfires.** Fire times earlier than the task's creation never count. A fire time more than
``grace`` before ``now`` that has not been materialised was missed (the master was down, or the
ledger was), and so was every fire time up to ``missed_until`` (the instant a paused schedule
was resumed: what fell due while paused is missed, however recent): ``all`` materialises every
missed fire (at most ``limit`` per call; the next call continues), ``latest`` (the default)
only the most recent one, ``none`` none of them. Fires after both ``now - grace`` and
``missed_until``, up to ``now + horizon``, are always materialised.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, assert_never
from zoneinfo import ZoneInfo

from croniter import croniter

from taskmesh.common.model import CronSchedule, IntervalSchedule, MisfirePolicy

RecurringSchedule = CronSchedule | IntervalSchedule

MISFIRE_GRACE = timedelta(seconds=60)  # a fire this late is still on time, not missed
MAX_FIRES = 1000  # fire times returned per call; a longer backlog continues on the next call
RESOLUTION = timedelta(microseconds=1)  # of PostgreSQL's timestamptz
SECOND = timedelta(seconds=1)


class Recurrence(Protocol):
    """The fire times of one schedule, as instants."""

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant``."""
        ...

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """The last fire time at or before ``instant``, or None when there is none."""
        ...


@dataclass(frozen=True, slots=True)
class IntervalRecurrence:
    """Fire times ``anchor + k·every`` for k ≥ 0."""

    anchor: datetime
    every: timedelta

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant``."""
        if instant < self.anchor:
            return self.anchor
        return self.anchor + ((instant - self.anchor) // self.every + 1) * self.every

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """The last fire time at or before ``instant``, or None before the anchor."""
        if instant < self.anchor:
            return None
        return self.anchor + ((instant - self.anchor) // self.every) * self.every


@dataclass(frozen=True, slots=True)
class CronRecurrence:
    """Fire times of a cron expression on the wall clock of ``zone`` (see the module doc)."""

    expression: str
    zone: ZoneInfo

    def next_after(self, instant: datetime) -> datetime:
        """The first fire time strictly after ``instant``."""
        matches = croniter(self.expression, wall_clock(instant, self.zone))
        while True:
            fire = instant_of(matches.get_next(datetime), self.zone)
            if fire > instant:
                return fire

    def latest_at_or_before(self, instant: datetime) -> datetime | None:
        """The last fire time at or before ``instant``."""
        local = instant.astimezone(self.zone)
        wall = wall_clock(instant, self.zone)
        if local.fold:  # the repeated hour: its first occurrence is already behind us
            wall += _offset(local, fold=0) - _offset(local, fold=1)
        matches = croniter(self.expression, wall.replace(microsecond=0) + SECOND)
        while True:
            fire = instant_of(matches.get_prev(datetime), self.zone)
            if fire <= instant:
                return fire


def _offset(local: datetime, *, fold: int) -> timedelta:
    """The UTC offset of a local time, read with the given fold."""
    offset = local.replace(fold=fold).utcoffset()
    assert offset is not None  # a ZoneInfo always answers
    return offset


def wall_clock(instant: datetime, zone: ZoneInfo) -> datetime:
    """The wall-clock time of ``instant`` in ``zone``, labelled UTC so arithmetic ignores DST."""
    return instant.astimezone(zone).replace(tzinfo=UTC, fold=0)


def instant_of(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant a wall-clock time of ``zone`` fires at: first occurrence, or the gap's end."""
    instant = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if wall_clock(instant, zone) == wall:
        return instant
    return _gap_end(wall, zone)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after the spring-forward gap that swallowed ``wall``.

    In a gap, fold=1 reads ``wall`` with the offset after the transition (an instant before
    it) and fold=0 with the offset before (an instant after it); the transition lies between.
    """
    before = int(wall.replace(tzinfo=zone, fold=1).astimezone(UTC).timestamp())
    after = int(wall.replace(tzinfo=zone, fold=0).astimezone(UTC).timestamp())
    new_offset = datetime.fromtimestamp(after, zone).utcoffset()
    while after - before > 1:  # transitions fall on whole seconds
        middle = (before + after) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == new_offset:
            after = middle
        else:
            before = middle
    return datetime.fromtimestamp(after, UTC)


def recurrence(schedule: RecurringSchedule, created_at: datetime) -> Recurrence:
    """The fire times of ``schedule`` for a task created at ``created_at``."""
    match schedule:
        case CronSchedule():
            return CronRecurrence(schedule.expression, ZoneInfo(schedule.timezone))
        case IntervalSchedule():
            return IntervalRecurrence(schedule.start_at or created_at, schedule.every)
        case _:
            assert_never(schedule)


def fires_between(
    fires: Recurrence, after: datetime, until: datetime, limit: int = MAX_FIRES
) -> list[datetime]:
    """Fire times in ``(after, until]``, earliest first, at most ``limit``."""
    found: list[datetime] = []
    fire = fires.next_after(after)
    while fire <= until and len(found) < limit:
        found.append(fire)
        fire = fires.next_after(fire)
    return found


def next_fires(
    schedule: RecurringSchedule, created_at: datetime, after: datetime, count: int
) -> list[datetime]:
    """The next ``count`` fire times strictly after ``after`` (for previews)."""
    fires = recurrence(schedule, created_at)
    found: list[datetime] = []
    fire = max(after, created_at - RESOLUTION)
    for _ in range(count):
        fire = fires.next_after(fire)
        found.append(fire)
    return found


def _missed(
    fires: Recurrence, policy: MisfirePolicy, since: datetime, cutoff: datetime, limit: int
) -> list[datetime]:
    """The missed fire times in ``(since, cutoff]`` that ``policy`` keeps."""
    match policy:
        case MisfirePolicy.ALL:
            return fires_between(fires, since, cutoff, limit)
        case MisfirePolicy.LATEST:
            latest = fires.latest_at_or_before(cutoff)
            return [latest] if latest is not None and latest > since else []
        case MisfirePolicy.NONE:
            return []
        case _:
            assert_never(policy)


def fires_to_materialise(
    schedule: RecurringSchedule,
    *,
    created_at: datetime,
    last_fire: datetime | None,
    now: datetime,
    horizon: timedelta,
    grace: timedelta = MISFIRE_GRACE,
    limit: int = MAX_FIRES,
    missed_until: datetime | None = None,
) -> list[datetime]:
    """The fire times after ``last_fire`` (or from creation on) to create runs for, in order.

    Missed fires (due before ``now - grace``, or at or before ``missed_until``) are kept as the
    misfire policy says; every later fire up to ``now + horizon`` is kept. At most ``limit``
    are returned, earliest first, so a long backlog under ``all`` is worked off over several
    calls without gaps.
    """
    fires = recurrence(schedule, created_at)
    since = last_fire if last_fire is not None else created_at - RESOLUTION
    cutoff = max(filter(None, (now - grace, missed_until)))
    missed = _missed(fires, schedule.misfire, since, cutoff, limit)
    if len(missed) >= limit:
        return missed
    return missed + fires_between(fires, max(since, cutoff), now + horizon, limit - len(missed))
