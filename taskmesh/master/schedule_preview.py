"""What ``taskmesh schedule`` shows: each recurring task's last fire and its next fire times.

Fire times come from ``common.schedules`` (the materialiser's own rules, so DST is handled the
same way). They are the schedule's fire times after now; an ``overlap: forbid`` schedule may
still skip one of them at fire time if the previous run is unfinished then.
"""

from __future__ import annotations

import logging
from datetime import datetime

from taskmesh.common.errors import ValidationError
from taskmesh.common.model import CronSchedule, IntervalSchedule, RecurringTask, ScheduledTask
from taskmesh.common.schedules import next_fires

log = logging.getLogger(__name__)

DEFAULT_NEXT = 5
MAX_NEXT = 100


def fire_count(requested: int) -> int:
    """How many fire times to show: 0 means the default; 1..``MAX_NEXT`` otherwise."""
    if requested < 0 or requested > MAX_NEXT:
        raise ValidationError("next", f"must be between 1 and {MAX_NEXT}, got {requested}")
    return requested or DEFAULT_NEXT


def preview(item: RecurringTask, now: datetime, count: int) -> ScheduledTask:
    """One recurring task with its next ``count`` fire times after ``now`` (none if paused)."""
    task, schedule = item.task, item.task.spec.schedule
    if task.paused or not isinstance(schedule, CronSchedule | IntervalSchedule):
        return ScheduledTask(task, item.last_due_at)
    try:
        fires = next_fires(schedule, task.created_at, now, count)
    except (ValueError, KeyError) as error:  # a zone or expression this host cannot read
        log.warning("schedule of task %s cannot be previewed: %s", task.id, error)
        fires = []
    return ScheduledTask(task, item.last_due_at, tuple(fires))
