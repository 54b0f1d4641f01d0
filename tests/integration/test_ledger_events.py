"""A live tail of the event log misses nothing when transactions commit out of id order.

Event ids are taken from a sequence at insert time, so two writers can commit in the opposite
order of their ids. Each test holds one writer's transaction open on a raw connection while
another commits, and checks what ``follow_events`` hands out before and after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from taskmesh.common.errors import NotFoundError
from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.engine import asyncpg_url
from taskmesh.common.model import (
    EventCursor,
    EventFilter,
    Run,
    RunEvent,
    TaskSpec,
    WorkflowTask,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario

INSERT_EVENT = """
    INSERT INTO run_events (at, run_id, task_id, attempt, to_state, epoch, detail)
    VALUES (now(), $1, $2, 1, 'pending', 0, $3::jsonb) RETURNING id
"""


@asynccontextmanager
async def writer(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection with an open transaction; the test commits it when it chooses."""
    url = asyncpg_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        await connection.execute("BEGIN")
        yield connection
    finally:
        await connection.close()


async def insert_event(connection: asyncpg.Connection, run: Run, label: str) -> int:
    """One event of ``run`` carrying ``label`` in its detail; returns its id."""
    return int(await connection.fetchval(INSERT_EVENT, run.id, run.task_id, f'{{"n": "{label}"}}'))


async def tail(ledger: Ledger, cursor: EventCursor) -> tuple[list[str], EventCursor]:
    """The labels of the next page and the cursor after it."""
    page = await ledger.follow_events(cursor)
    return [label(event) for event in page.events], page.cursor


def label(event: RunEvent) -> str:
    """The label a test put on an event, or the target state of a ledger-written one."""
    value: Any = event.detail.get("n", str(event.to_state))
    return str(value)


@pytest.fixture
async def run(ledger: Ledger) -> Run:
    """A run to hang events on."""
    _, first, _ = await ledger.submit_task(TaskSpec(name="t", command="true"), NOW)
    assert first is not None
    return first


async def test_a_later_id_waits_for_an_earlier_open_transaction(
    ledger: Ledger, database_url: str, run: Run
) -> None:
    """Id 1 open, id 2 committed: nothing is handed out until id 1 commits, then both in order."""
    cursor = await ledger.event_cursor(0)
    async with writer(database_url) as first, writer(database_url) as second:
        await insert_event(first, run, "first")
        await insert_event(second, run, "second")
        await second.execute("COMMIT")
        labels, cursor = await tail(ledger, cursor)
        assert labels == []
        await first.execute("COMMIT")
    labels, cursor = await tail(ledger, cursor)
    assert labels == ["first", "second"]
    assert await tail(ledger, cursor) == ([], cursor)


async def test_an_earlier_id_committed_late_is_not_skipped(
    ledger: Ledger, database_url: str, run: Run
) -> None:
    """The case an id cursor gets wrong: the older transaction writes the newer id first.

    ``second`` takes its transaction id first but inserts after ``first``; when ``second``
    commits, its event (the higher id) goes out; ``first``'s lower id must still follow.
    """
    cursor = await ledger.event_cursor(0)
    async with writer(database_url) as first, writer(database_url) as second:
        await second.fetchval("SELECT pg_current_xact_id()")  # the older transaction
        first_id = await insert_event(first, run, "first")
        second_id = await insert_event(second, run, "second")
        assert first_id < second_id
        await second.execute("COMMIT")
        labels, cursor = await tail(ledger, cursor)
        assert labels == ["second"]
        await first.execute("COMMIT")
    labels, cursor = await tail(ledger, cursor)
    assert labels == ["first"]


async def test_resuming_after_an_id_continues_in_commit_order(ledger: Ledger, run: Run) -> None:
    """A client that saw event N resumes after it, and paging by a limit loses nothing."""
    start = EventCursor(0, 0)
    for n in range(5):
        _, more, _ = await ledger.submit_task(TaskSpec(name=f"t{n}", command="true"), NOW)
        assert more is not None
    everything = (await ledger.follow_events(start)).events
    assert len(everything) == 6
    page = await ledger.follow_events(start, limit=2)
    assert page.events == everything[:2]
    resumed = await ledger.event_cursor(page.events[-1].id)
    assert (await ledger.follow_events(resumed)).events == everything[2:]


async def test_a_cursor_at_the_present_skips_history(ledger: Ledger, run: Run) -> None:
    """Starting from 0 means new events only."""
    cursor = await ledger.event_cursor(0)
    assert (await ledger.follow_events(cursor)).events == []
    _, later, _ = await ledger.submit_task(TaskSpec(name="later", command="true"), NOW)
    assert later is not None
    assert [e.run_id for e in (await ledger.follow_events(cursor)).events] == [later.id]


async def test_a_workflow_filter_keeps_its_tasks_events(ledger: Ledger, run: Run) -> None:
    """Watching a workflow: the events of its tasks, none of a task outside it."""
    cursor = await ledger.event_cursor(0)
    items = [WorkflowTask("a", TaskSpec("a", "true")), WorkflowTask("b", TaskSpec("b", "true"))]
    submitted = await ledger.submit_workflow("nightly", items, NOW)
    await ledger.submit_task(TaskSpec(name="outsider", command="true"), NOW)
    page = await ledger.follow_events(
        cursor, filters=EventFilter(workflow_id=submitted.workflow_id)
    )
    members = {task.id for task, _ in submitted.tasks.values()}
    assert {event.task_id for event in page.events} == members
    assert len(page.events) == 2


async def test_resuming_after_an_unknown_id_names_the_field(ledger: Ledger) -> None:
    """An id that was never sent is a clear error, not a silent restart."""
    with pytest.raises(NotFoundError, match="after_id"):
        await ledger.event_cursor(987654)
    assert (await ledger.follow_events(EventCursor(0, 0), filters=EventFilter())).events == []
