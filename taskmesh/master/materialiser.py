"""The materialiser: creates the runs of cron and interval tasks as their fire times come.

A singleton duty: among several masters only the holder of the ``master-materialiser``
advisory lock materialises; the others stand by. Even without the lock two materialisers
cannot duplicate a fire: runs are unique by (task, due_at, attempt) and the ledger skips a
fire that exists.

Every ``PASS_INTERVAL`` (1 s) the leader reads every unpaused recurring task with its latest
fire (one query) and creates the fire times ``schedules.fires_to_materialise`` returns (DST and
misfire rules are documented there; the fires that fell due while a task was paused count as
missed). The overlap policy decides what is created:

- ``allow``: every fire, ``LOOKAHEAD`` (2 s, two passes) ahead of its due time, so the run
  exists before it is due and the dispatcher claims it on time even after one late pass;
- ``forbid``: nothing while an attempt of the latest fire is unfinished, and nothing is
  recorded: fires due meanwhile are skipped for good, because fire times resume after the
  instant that attempt finished. Only due fires are considered (whether the previous run is
  unfinished can only be judged at the fire time), and of several due at once (a misfire
  backlog under ``all``) only the first is created: the others would overlap it;
- ``replace``: the latest due fire is created in the same transaction that cancels the
  unfinished attempts of earlier fires (blocked and pending ones in the ledger; in-flight
  ones are forwarded to their regions, like a cancel). Earlier fires due in the same pass
  are not created: they would be replaced at once.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from taskmesh.common.errors import NotFoundError, ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.model import (
    CronSchedule,
    IntervalSchedule,
    OverlapPolicy,
    RecurringTask,
    Run,
)
from taskmesh.common.schedules import fires_to_materialise
from taskmesh.master.cancel_forwarding import forward_cancels
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.region_clients import RegionClients
from taskmesh.master.singleton_duty import SingletonDuty

log = logging.getLogger(__name__)

DUTY = "master-materialiser"
PASS_INTERVAL = 1.0  # seconds
LOOKAHEAD = timedelta(seconds=2 * PASS_INTERVAL)


def _resume_after(item: RecurringTask, overlap: OverlapPolicy) -> datetime | None:
    """Where fire times resume: after the latest fire, or, under forbid, after it finished."""
    if overlap is OverlapPolicy.FORBID and item.last_finished_at is not None:
        return max(filter(None, (item.last_due_at, item.last_finished_at)))
    return item.last_due_at


def plan_fires(item: RecurringTask, now: datetime, lookahead: timedelta) -> list[datetime]:
    """The fire times to create for one task at ``now`` under its overlap policy."""
    schedule = item.task.spec.schedule
    if not isinstance(schedule, CronSchedule | IntervalSchedule):
        return []
    overlap = schedule.overlap
    if overlap is OverlapPolicy.FORBID and item.unfinished:
        return []
    fires = fires_to_materialise(
        schedule,
        created_at=item.task.created_at,
        last_fire=_resume_after(item, overlap),
        now=now,
        horizon=lookahead if overlap is OverlapPolicy.ALLOW else timedelta(0),
        missed_until=item.resumed_at,
    )
    if overlap is OverlapPolicy.FORBID:
        return fires[:1]
    if overlap is OverlapPolicy.REPLACE:
        return fires[-1:]
    return fires


class Materialiser(SingletonDuty):
    """Creates the runs of recurring tasks a pass at a time, while holding its duty."""

    def __init__(
        self,
        ledger: Ledger,
        regions: RegionClients,
        *,
        clock: Clock = utc_now,
        interval: float = PASS_INTERVAL,
        lookahead: timedelta = LOOKAHEAD,
    ) -> None:
        """Materialise ``lookahead`` ahead, a pass every ``interval`` seconds."""
        super().__init__(ledger, DUTY, interval)
        self._regions = regions
        self._clock = clock
        self._lookahead = lookahead

    async def run_pass(self) -> list[Run]:
        """One materialising pass."""
        return await self.materialise_once()

    async def materialise_once(self) -> list[Run]:
        """One pass over every recurring task; returns the runs it created."""
        now = self._clock()
        created: list[Run] = []
        for item in await self._ledger.recurring_tasks():
            created.extend(await self._materialise_task(item, now))
        return created

    async def _materialise_task(self, item: RecurringTask, now: datetime) -> list[Run]:
        """Create one task's due fires; a task that cannot be planned is logged and skipped."""
        task = item.task
        try:
            fires = plan_fires(item, now, self._lookahead)
            if not fires:
                return []
            if _overlap(item) is OverlapPolicy.REPLACE:
                return await self._replace(item, fires[-1], now)
            return await self._ledger.materialise_runs(task.id, fires, now)
        except (ValueError, KeyError, NotFoundError, ValidationError) as error:
            # ValueError/KeyError: an expression or time zone this host cannot read
            log.warning("materialiser: task %s (%s) skipped: %s", task.id, task.spec.name, error)
            return []

    async def _replace(self, item: RecurringTask, due_at: datetime, now: datetime) -> list[Run]:
        """Create the fire at ``due_at``, cancelling earlier unfinished runs of the task."""
        cancellation, created = await self._ledger.replace_runs(item.task.id, due_at, now)
        if cancellation.to_forward:
            reason = f"replaced by the fire due at {due_at.isoformat()}"
            await forward_cancels(self._regions, cancellation.to_forward, reason)
        return created


def _overlap(item: RecurringTask) -> OverlapPolicy:
    """The overlap policy of a recurring task."""
    schedule = item.task.spec.schedule
    assert isinstance(schedule, CronSchedule | IntervalSchedule)
    return schedule.overlap
