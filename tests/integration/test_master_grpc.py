"""The master's gRPC API: validation of every field, and each call against a real ledger."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import grpc.aio
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_master_harness import (
    FakeRegion,
    RunningMaster,
    eventually,
    fake_regions,
    make_topology,
)
from test_master_harness import running_master as serve

from taskmesh.common.ledger import Ledger
from taskmesh.common.rpc import run_pb2, scheduler_pb2, scheduler_pb2_grpc, task_pb2
from taskmesh.common.rpc.status import FIELD_KEY

if TYPE_CHECKING:
    Stub = scheduler_pb2_grpc.SchedulerAsyncStub
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def regions() -> AsyncIterator[dict[str, FakeRegion]]:
    """Fake eu and us regions."""
    async with fake_regions("eu", "us") as started:
        yield started


@pytest.fixture
async def served(ledger: Ledger, regions: dict[str, FakeRegion]) -> AsyncIterator[RunningMaster]:
    """A master serving the ledger, delegating to the fake regions."""
    async with serve(make_topology(), ledger, regions) as running:
        yield running


@pytest.fixture
async def stub(served: RunningMaster) -> AsyncIterator[Stub]:
    """A Scheduler client of the master."""
    async with grpc.aio.insecure_channel(served.grpc) as channel:
        yield scheduler_pb2_grpc.SchedulerStub(channel)


def spec(**fields: Any) -> task_pb2.TaskSpec:
    """A valid spec with some fields replaced."""
    fields.setdefault("name", "job")
    fields.setdefault("command", "echo hi")
    return task_pb2.TaskSpec(**fields)


INVALID: dict[str, tuple[task_pb2.TaskSpec, str]] = {
    "empty command": (spec(command=""), "command"),
    "blank command": (spec(command="   "), "command"),
    "priority above range": (spec(priority=1001), "priority"),
    "priority below range": (spec(priority=-1001), "priority"),
    "unknown region": (spec(region="mars"), "region"),
    "at without instant": (
        spec(schedule=task_pb2.Schedule(at=task_pb2.AtSchedule())),
        "schedule.at.at",
    ),
    "bad cron": (
        spec(schedule=task_pb2.Schedule(cron=task_pb2.CronSchedule(expression="61 * * * *"))),
        "schedule.cron.expression",
    ),
    "cron that never fires": (
        spec(schedule=task_pb2.Schedule(cron=task_pb2.CronSchedule(expression="0 0 31 2 *"))),
        "schedule.cron.expression",
    ),
    "unknown time zone": (
        spec(
            schedule=task_pb2.Schedule(
                cron=task_pb2.CronSchedule(expression="* * * * *", timezone="Mars/Olympus")
            )
        ),
        "schedule.cron.timezone",
    ),
    "zero interval": (
        spec(schedule=task_pb2.Schedule(interval=task_pb2.IntervalSchedule(every=Duration()))),
        "schedule.interval.every",
    ),
    "negative timeout": (spec(timeout=Duration(seconds=-5)), "timeout"),
    "zero schedule_to_start_timeout": (
        spec(schedule_to_start_timeout=Duration()),
        "schedule_to_start_timeout",
    ),
    "args for a shell command": (spec(args=["x"]), "args"),
    "unknown executor": (spec(executor=99), "executor"),
    "prefer placement without region": (
        spec(placement=task_pb2.PLACEMENT_PREFER),
        "placement",
    ),
    "too many attempts": (
        spec(retry=task_pb2.RetryPolicy(max_attempts=1000)),
        "retry.max_attempts",
    ),
    "shrinking multiplier": (spec(retry=task_pb2.RetryPolicy(multiplier=0.5)), "retry.multiplier"),
    "retry on success": (
        spec(retry=task_pb2.RetryPolicy(retry_on=[run_pb2.RUN_STATE_SUCCEEDED])),
        "retry.retry_on",
    ),
    "max below initial backoff": (
        spec(
            retry=task_pb2.RetryPolicy(
                initial_backoff=Duration(seconds=10), max_backoff=Duration(seconds=1)
            )
        ),
        "retry.max_backoff",
    ),
    "malformed dependency": (spec(dependencies=["not-a-uuid"]), "dependencies"),
    "unknown dependency": (spec(dependencies=[UNKNOWN_ID]), "dependencies"),
    "empty idempotency key": (spec(idempotency_key=""), "idempotency_key"),
    "empty label key": (spec(labels={"": "x"}), "labels"),
    "overlong kind": (spec(kind="k" * 200), "kind"),
    "overlong name": (spec(name="n" * 300), "name"),
}


@pytest.mark.parametrize("case", INVALID)
async def test_an_invalid_spec_is_refused_naming_the_field(
    stub: Stub, ledger: Ledger, case: str
) -> None:
    """INVALID_ARGUMENT with the field in the metadata, and nothing written."""
    bad, field = INVALID[case]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Submit(scheduler_pb2.SubmitRequest(spec=bad))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    metadata = dict(raised.value.trailing_metadata() or ())
    assert metadata[FIELD_KEY] == field, raised.value.details()
    assert raised.value.details()
    assert await ledger.list_tasks() == []


async def test_submit_stores_the_task_and_its_first_run(stub: Stub, ledger: Ledger) -> None:
    """The answer carries the stored task and a pending first run; the name defaults."""
    response = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec(name="", priority=7)))
    assert response.task.spec.name == "echo"
    assert response.first_run.task_id == response.task.id
    assert response.first_run.priority == 7
    assert not response.deduplicated
    (status,) = await ledger.list_tasks()
    assert str(status.task.id) == response.task.id


async def test_a_repeated_idempotency_key_returns_the_first_task(stub: Stub) -> None:
    """The second submit is deduplicated."""
    request = scheduler_pb2.SubmitRequest(spec=spec(idempotency_key="once"))
    first = await stub.Submit(request)
    second = await stub.Submit(request)
    assert second.deduplicated
    assert second.task.id == first.task.id


async def test_a_future_task_waits_and_a_cron_task_has_no_run_yet(stub: Stub) -> None:
    """An at-schedule gets its run at that instant; a cron task is stored without one."""
    at = Timestamp(seconds=4_102_444_800)  # 2100-01-01
    later = await stub.Submit(
        scheduler_pb2.SubmitRequest(
            spec=spec(schedule=task_pb2.Schedule(at=task_pb2.AtSchedule(at=at)))
        )
    )
    assert later.first_run.due_at == at
    assert later.first_run.state == run_pb2.RUN_STATE_PENDING
    cron = task_pb2.CronSchedule(expression="*/5 * * * *", timezone="Europe/Paris")
    recurring = await stub.Submit(
        scheduler_pb2.SubmitRequest(spec=spec(schedule=task_pb2.Schedule(cron=cron)))
    )
    assert not recurring.HasField("first_run")


async def test_get_task_and_run_and_lists(stub: Stub) -> None:
    """GetTask, GetRun, ListTasks and ListRuns see the stored task."""
    submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec(region="eu")))
    task = await stub.GetTask(scheduler_pb2.GetTaskRequest(task_id=submitted.task.id))
    assert task.task == submitted.task
    assert [run.id for run in task.runs] == [submitted.first_run.id]
    run = await stub.GetRun(scheduler_pb2.GetRunRequest(run_id=submitted.first_run.id))
    assert run.run.task_id == submitted.task.id
    listed = await stub.ListTasks(scheduler_pb2.ListTasksRequest(region="eu"))
    assert [status.task.id for status in listed.tasks] == [submitted.task.id]
    runs = await stub.ListRuns(scheduler_pb2.ListRunsRequest(task_id=submitted.task.id))
    assert [item.id for item in runs.runs] == [submitted.first_run.id]


async def test_list_tasks_pages_newest_first(stub: Stub) -> None:
    """Pages of two, newest first, with a token until the last page."""
    ids = [(await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec()))).task.id for _ in range(3)]
    first = await stub.ListTasks(scheduler_pb2.ListTasksRequest(limit=2))
    assert [status.task.id for status in first.tasks] == ids[::-1][:2]
    second = await stub.ListTasks(
        scheduler_pb2.ListTasksRequest(limit=2, page_token=first.next_page_token)
    )
    assert [status.task.id for status in second.tasks] == [ids[0]]
    assert second.next_page_token == ""


@pytest.mark.parametrize(
    ("call", "request_message", "code"),
    [
        ("GetTask", scheduler_pb2.GetTaskRequest(task_id=UNKNOWN_ID), grpc.StatusCode.NOT_FOUND),
        ("GetTask", scheduler_pb2.GetTaskRequest(task_id="42"), grpc.StatusCode.INVALID_ARGUMENT),
        ("GetRun", scheduler_pb2.GetRunRequest(run_id=UNKNOWN_ID), grpc.StatusCode.NOT_FOUND),
        ("Cancel", scheduler_pb2.CancelRequest(task_id=UNKNOWN_ID), grpc.StatusCode.NOT_FOUND),
        ("Cancel", scheduler_pb2.CancelRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("Cancel", scheduler_pb2.CancelRequest(run_id=UNKNOWN_ID), grpc.StatusCode.UNIMPLEMENTED),
        (
            "SetPriority",
            scheduler_pb2.SetPriorityRequest(task_id=UNKNOWN_ID, priority=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            "ListTasks",
            scheduler_pb2.ListTasksRequest(page_token="garbage"),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ("SubmitWorkflow", scheduler_pb2.SubmitWorkflowRequest(), grpc.StatusCode.INVALID_ARGUMENT),
        ("Retry", scheduler_pb2.RetryRequest(task_id=UNKNOWN_ID), grpc.StatusCode.NOT_FOUND),
        ("Retry", scheduler_pb2.RetryRequest(), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_errors_map_to_status_codes(
    stub: Stub, call: str, request_message: Any, code: grpc.StatusCode
) -> None:
    """Unknown ids: NOT_FOUND; malformed ones: INVALID_ARGUMENT; missing features: UNIMPLEMENTED."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await getattr(stub, call)(request_message)
    assert raised.value.code() is code, raised.value.details()


async def test_cancel_cancels_pending_runs_and_forwards_delegated_ones(
    stub: Stub, served: RunningMaster, regions: dict[str, FakeRegion]
) -> None:
    """A run delegated to a region is cancelled there: the region is told, the id returned."""
    submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec(region="eu")))
    run_id = submitted.first_run.id
    await eventually(lambda: any(str(run.run_id) == run_id for run in regions["eu"].delegated))
    response = await stub.Cancel(scheduler_pb2.CancelRequest(task_id=submitted.task.id))
    assert list(response.cancelled_run_ids) == [run_id]
    assert regions["eu"].cancelled == [run_id]


async def test_set_priority_changes_runs_and_tells_the_region(
    stub: Stub, regions: dict[str, FakeRegion]
) -> None:
    """The run takes the new priority; its region hears of it while the run is queued there."""
    submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec(region="us")))
    run_id = submitted.first_run.id
    await eventually(lambda: any(str(run.run_id) == run_id for run in regions["us"].delegated))
    response = await stub.SetPriority(
        scheduler_pb2.SetPriorityRequest(task_id=submitted.task.id, priority=900)
    )
    assert list(response.run_ids) == [run_id]
    assert regions["us"].reprioritised == [(run_id, 900)]
    run = await stub.GetRun(scheduler_pb2.GetRunRequest(run_id=run_id))
    assert run.run.priority == 900


async def test_pause_resume_and_list_schedules(stub: Stub) -> None:
    """A cron task paused, listed without fires, resumed; a one-shot task cannot be paused."""
    cron = task_pb2.Schedule(
        cron=task_pb2.CronSchedule(expression="30 2 * * *", timezone="Europe/Berlin")
    )
    submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec(schedule=cron)))
    task_id = submitted.task.id
    listed = await stub.ListSchedules(scheduler_pb2.ListSchedulesRequest(next=3))
    (item,) = listed.schedules
    assert item.task.id == task_id
    fires = [fire.ToDatetime() for fire in item.next_fires]
    assert len(fires) == 3
    assert all(fire > listed.observed_at.ToDatetime() for fire in fires)
    paused = await stub.PauseSchedule(scheduler_pb2.PauseScheduleRequest(task_id=task_id))
    assert paused.task.paused
    (item,) = (await stub.ListSchedules(scheduler_pb2.ListSchedulesRequest())).schedules
    assert item.task.paused
    assert list(item.next_fires) == []
    resumed = await stub.ResumeSchedule(scheduler_pb2.ResumeScheduleRequest(task_id=task_id))
    assert not resumed.task.paused
    once = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec()))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.PauseSchedule(scheduler_pb2.PauseScheduleRequest(task_id=once.task.id))
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListSchedules(scheduler_pb2.ListSchedulesRequest(next=-1))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_get_cluster_lists_topology_regions_with_live_figures(stub: Stub) -> None:
    """Each region in topology order, reachable, with its breaker and described queue depth."""
    response = await stub.GetCluster(scheduler_pb2.GetClusterRequest())
    assert [region.name for region in response.regions] == ["eu", "us"]
    for region in response.regions:
        assert region.reachable
        assert region.queue_depth == 7
        assert region.breaker != 0
        assert region.state != 0
    assert response.HasField("observed_at")


async def test_watch_events_streams_transitions(stub: Stub) -> None:
    """A watch replaying the log sees a submitted run delegated, in id order."""
    submitted = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec(region="eu")))
    request = scheduler_pb2.WatchEventsRequest(task_id=submitted.task.id, after_id=1)
    ids: list[int] = []
    states: list[int] = []
    async with asyncio.timeout(10):
        async for batch in stub.WatchEvents(request):
            ids.extend(event.id for event in batch.events)
            states.extend(event.to_state for event in batch.events)
            if run_pb2.RUN_STATE_DELEGATED in states:
                break
    assert ids == sorted(ids)
    assert all(event_id > 1 for event_id in ids)


async def test_health_is_serving(served: RunningMaster) -> None:
    """The standard health service answers SERVING for the server and the Scheduler."""
    async with grpc.aio.insecure_channel(served.grpc) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "taskmesh.v1.Scheduler"):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_retry_requeues_a_cancelled_run_and_refuses_an_active_one(stub: Stub) -> None:
    """A cancelled future run gets attempt 2 (pending until its due time); retrying that is
    refused while it waits."""
    later = Timestamp()
    later.GetCurrentTime()
    later.seconds += 3600
    submitted = await stub.Submit(
        scheduler_pb2.SubmitRequest(
            spec=spec(schedule=task_pb2.Schedule(at=task_pb2.AtSchedule(at=later)))
        )
    )
    await stub.Cancel(scheduler_pb2.CancelRequest(task_id=submitted.task.id))
    response = await stub.Retry(scheduler_pb2.RetryRequest(task_id=submitted.task.id))
    assert (response.run.task_id, response.run.attempt) == (submitted.task.id, 2)
    assert response.run.state == run_pb2.RUN_STATE_PENDING
    assert list(response.requeued) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.Retry(scheduler_pb2.RetryRequest(task_id=submitted.task.id))
    assert raised.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "still active" in (raised.value.details() or "")
