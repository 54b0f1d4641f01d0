"""Submitting tasks: first runs, schedules, idempotency, reads, notifications."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine

from taskmesh.common.errors import LedgerUnavailableError, NotFoundError, ValidationError
from taskmesh.common.ledger import Ledger
from taskmesh.common.ledger.engine import asyncpg_url
from taskmesh.common.ledger.notifications import DueNotice
from taskmesh.common.model import (
    AtSchedule,
    CronSchedule,
    Executor,
    IntervalSchedule,
    MisfirePolicy,
    OverlapPolicy,
    Placement,
    RetryPolicy,
    RunState,
    TaskSpec,
    WorkflowTask,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # the clock of conftest.Scenario


def full_spec(**overrides: object) -> TaskSpec:
    """A spec with every field set away from its default."""
    fields: dict[str, object] = {
        "name": "nightly-report",
        "command": "/usr/bin/report",
        "executor": Executor.EXEC,
        "args": ("--day", "today"),
        "description": "the nightly report",
        "schedule": AtSchedule(NOW + timedelta(hours=1)),
        "priority": 42,
        "region": "eu",
        "placement": Placement.STRICT,
        "kind": "reports",
        "timeout": timedelta(minutes=5),
        "schedule_to_start_timeout": timedelta(minutes=1),
        "retry": RetryPolicy(
            max_attempts=4,
            initial_backoff=timedelta(seconds=2),
            max_backoff=timedelta(seconds=60),
            multiplier=3.0,
            retry_on=frozenset({RunState.FAILED, RunState.LOST}),
        ),
        "idempotency_key": "report-2026-03-01",
        "labels": {"team": "data", "tier": "gold"},
    }
    fields.update(overrides)
    return TaskSpec(**fields)


async def test_task_round_trips_every_field(ledger: Ledger, scenario) -> None:
    """What is submitted is what is read back, field for field."""
    _, dependency = await scenario.submit()
    spec = full_spec(dependencies=(dependency.task_id,))
    task, run, created = await ledger.submit_task(spec, NOW)
    assert created
    assert task.spec == spec
    assert task.created_at == NOW
    assert await ledger.get_task(task.id) == task
    assert run is not None
    assert (run.state, run.due_at, run.ready_at, run.priority, run.region) == (
        RunState.BLOCKED,
        NOW + timedelta(hours=1),
        NOW + timedelta(hours=1),
        42,
        "eu",
    )


@pytest.mark.parametrize(
    "schedule",
    [
        CronSchedule("*/5 * * * *", "Europe/Paris", MisfirePolicy.ALL, OverlapPolicy.FORBID),
        IntervalSchedule(timedelta(minutes=10), NOW, MisfirePolicy.NONE, OverlapPolicy.REPLACE),
        IntervalSchedule(timedelta(seconds=30)),
    ],
)
async def test_recurring_tasks_are_stored_without_a_run(ledger: Ledger, schedule) -> None:
    """Cron and interval tasks round-trip their schedule; their runs are materialised later."""
    task, run, _ = await ledger.submit_task(TaskSpec("tick", "true", schedule=schedule), NOW)
    assert run is None
    assert (await ledger.get_task(task.id)).spec.schedule == schedule
    assert await ledger.latest_run(task.id) is None


async def test_materialise_runs_never_creates_a_fire_twice(ledger: Ledger) -> None:
    """Fire times are unique per task: repeating or overlapping materialisations are no-ops."""
    spec = TaskSpec("tick", "true", schedule=CronSchedule("* * * * *"))
    task, _, _ = await ledger.submit_task(spec, NOW)
    fires = [NOW - timedelta(minutes=1), NOW, NOW + timedelta(minutes=1)]
    created = await ledger.materialise_runs(task.id, [*fires, fires[0]], NOW)
    assert [run.due_at for run in created] == fires
    assert all(run.state is RunState.PENDING for run in created)
    again = await ledger.materialise_runs(task.id, [*fires[1:], NOW + timedelta(minutes=2)], NOW)
    assert [run.due_at for run in again] == [NOW + timedelta(minutes=2)]
    assert len(await ledger.list_runs(task.id)) == 4
    with pytest.raises(NotFoundError):
        await ledger.materialise_runs(uuid4(), fires, NOW)


async def test_submit_without_schedule_is_due_now_and_logged(ledger: Ledger) -> None:
    """No schedule: one pending run due at once, and its creation event."""
    task, run, _ = await ledger.submit_task(TaskSpec("now", "true"), NOW)
    assert run is not None
    assert (run.state, run.due_at, run.attempt, run.epoch) == (RunState.PENDING, NOW, 1, 0)
    (event,) = await ledger.events_after(0)
    assert (event.run_id, event.task_id, event.from_state, event.to_state) == (
        run.id,
        task.id,
        None,
        RunState.PENDING,
    )


async def test_repeated_idempotency_key_returns_the_first_task(ledger: Ledger) -> None:
    """A second submit with the same key stores nothing and answers with the first task."""
    first, run, created = await ledger.submit_task(TaskSpec("a", "true", idempotency_key="k"), NOW)
    again, again_run, again_created = await ledger.submit_task(
        TaskSpec("b", "false", idempotency_key="k"), NOW + timedelta(seconds=1)
    )
    assert (created, again_created) == (True, False)
    assert again == first
    assert again_run == run
    assert len(await ledger.list_tasks()) == 1


async def test_concurrent_submits_with_one_key_make_one_task(
    ledger: Ledger, database_url: str
) -> None:
    """Ten clients racing with one key get the same id; exactly one of them created it."""
    spec = TaskSpec("race", "true", idempotency_key="only-once")
    others = [await Ledger.connect(database_url, pool_size=1) for _ in range(4)]
    try:
        clients = [ledger, *others]
        answers = await asyncio.gather(
            *(clients[i % len(clients)].submit_task(spec, NOW) for i in range(10))
        )
    finally:
        for other in others:
            await other.close()
    assert len({task.id for task, _, _ in answers}) == 1
    assert sum(created for _, _, created in answers) == 1
    assert len({run.id for _, run, _ in answers if run is not None}) == 1
    assert await ledger.count_pending() == 1


async def test_values_out_of_range_are_validation_errors(ledger: Ledger) -> None:
    """A CHECK violation reaches the caller as a ValidationError naming the constraint."""
    with pytest.raises(ValidationError, match="ck_tasks_priority"):
        await ledger.submit_task(TaskSpec("p", "true", priority=5000), NOW)


async def test_unknown_ids_raise_not_found(ledger: Ledger) -> None:
    """Reads of unknown ids raise NotFoundError; latest_run of nothing is None."""
    with pytest.raises(NotFoundError):
        await ledger.get_task(uuid4())
    with pytest.raises(NotFoundError):
        await ledger.get_run(uuid4())
    assert await ledger.latest_run(uuid4()) is None


async def test_workflows_group_tasks(ledger: Ledger) -> None:
    """A task may join an existing workflow; an unknown workflow is not found."""
    workflow_id = await ledger.create_workflow("etl", NOW)
    task, _, _ = await ledger.submit_task(TaskSpec("t", "true"), NOW, workflow_id=workflow_id)
    assert task.workflow_id == workflow_id
    with pytest.raises(NotFoundError, match="workflow"):
        await ledger.submit_task(TaskSpec("t", "true"), NOW, workflow_id=uuid4())


async def test_list_tasks_pages_and_filters(ledger: Ledger, scenario) -> None:
    """Newest first, keyset pages both ways, filters by latest run state and region."""
    tasks = []
    for minute in range(5):
        spec = TaskSpec(f"t{minute}", "true", region="eu" if minute % 2 else None)
        tasks.append((await ledger.submit_task(spec, NOW + timedelta(minutes=minute)))[0])
    newest_first = [task.id for task in reversed(tasks)]
    page = await ledger.list_tasks(limit=2)
    assert [s.task.id for s in page] == newest_first[:2]
    page = await ledger.list_tasks(limit=2, after=page[-1].task.id)
    assert [s.task.id for s in page] == newest_first[2:4]
    page = await ledger.list_tasks(limit=2, before=page[0].task.id)
    assert [s.task.id for s in page] == newest_first[:2]
    eu = await ledger.list_tasks(region="eu")
    assert [s.task.id for s in eu] == [tasks[3].id, tasks[1].id]
    claimed = await ledger.claim_due_runs({"us": 1}, NOW + timedelta(hours=1))
    delegated = await ledger.list_tasks(state=RunState.DELEGATED)
    assert [s.latest_run.id for s in delegated if s.latest_run] == [claimed[0].run_id]
    assert all(s.latest_run is not None for s in await ledger.list_tasks())


async def test_submits_tell_listeners_when_their_runs_are_due(ledger: Ledger) -> None:
    """LISTEN/NOTIFY: a future run announces its due time (for the dispatcher's timer), a due
    run announces "now", and a batch announces its earliest run."""
    later = NOW.replace(year=2999)
    async with ledger.listen_for_due_runs() as due:
        await ledger.submit_task(TaskSpec("later", "true", schedule=AtSchedule(later)), NOW)
        notice = await asyncio.wait_for(due.take(), timeout=5)
        assert notice == DueNotice(now=False, earliest=later)
        await ledger.submit_task(TaskSpec("now", "true"), NOW)
        notice = await asyncio.wait_for(due.take(), timeout=5)
        assert notice.now
        sooner, soonest = NOW + timedelta(hours=2), NOW + timedelta(hours=1)
        specs = [
            TaskSpec(f"t{index}", "true", schedule=AtSchedule(at))
            for index, at in enumerate((sooner, soonest))
        ]
        batch = [WorkflowTask(spec.name, spec) for spec in specs]
        await ledger.submit_workflow("batch", batch, NOW)
        notice = await asyncio.wait_for(due.take(), timeout=5)
        assert notice == DueNotice(now=False, earliest=soonest)


async def test_next_ready_at_is_the_earliest_later_pending_run(ledger: Ledger) -> None:
    """The dispatcher's timer: runs ready already and finished runs do not count."""
    assert await ledger.next_ready_at(NOW) is None
    await ledger.submit_task(TaskSpec("now", "true", region="eu"), NOW)
    assert await ledger.next_ready_at(NOW) is None
    for hours in (3, 1, 2):
        at = NOW + timedelta(hours=hours)
        spec = TaskSpec(f"in{hours}", "true", region="eu", schedule=AtSchedule(at))
        await ledger.submit_task(spec, NOW)
    assert await ledger.next_ready_at(NOW) == NOW + timedelta(hours=1)
    assert await ledger.next_ready_at(NOW + timedelta(hours=1)) == NOW + timedelta(hours=2)
    assert await ledger.next_ready_at(NOW + timedelta(hours=3)) is None
    claimed, next_ready = await ledger.claim_due_runs_and_next_ready({"eu": 10}, NOW)
    assert [run.task_name for run in claimed] == ["now"]
    assert next_ready == NOW + timedelta(hours=1)


async def test_unreachable_ledger_raises_ledger_unavailable() -> None:
    """No server at the address: the caller gets LedgerUnavailableError, to retry later."""
    with pytest.raises(LedgerUnavailableError):
        await Ledger.connect("postgresql://nobody@127.0.0.1:1/none")


async def test_connections_killed_under_the_pool_are_replaced(
    ledger: Ledger, database_url: str
) -> None:
    """After the server dropped every session (a restart, say), the next call just works."""
    await ledger.count_pending()
    engine = create_async_engine(asyncpg_url(database_url), poolclass=NullPool)
    try:
        async with engine.begin() as admin:
            await admin.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await engine.dispose()
    assert await ledger.count_pending() == 0
