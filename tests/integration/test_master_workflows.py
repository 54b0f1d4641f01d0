"""SubmitWorkflow over gRPC and ``POST /v1/workflows``: a DAG stored all or nothing.

No region is reachable here (the topology's addresses are port 0), so the master claims
nothing and first runs stay as submitted: roots pending, dependents blocked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

import aiohttp
import grpc
import grpc.aio
import pytest
from test_master_harness import RunningMaster, make_topology
from test_master_harness import running_master as serve

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RunState
from taskmesh.common.rpc import scheduler_pb2, scheduler_pb2_grpc, task_pb2
from taskmesh.common.rpc.status import FIELD_KEY

if TYPE_CHECKING:
    Stub = scheduler_pb2_grpc.SchedulerAsyncStub
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
async def served(ledger: Ledger) -> AsyncIterator[RunningMaster]:
    """A master with no reachable region."""
    async with serve(make_topology(), ledger) as running:
        yield running


@pytest.fixture
async def stub(served: RunningMaster) -> AsyncIterator[Stub]:
    """A Scheduler client of the master."""
    async with grpc.aio.insecure_channel(served.grpc) as channel:
        yield scheduler_pb2_grpc.SchedulerStub(channel)


@pytest.fixture
async def http(served: RunningMaster) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client of the master."""
    async with aiohttp.ClientSession(served.http) as session:
        yield session


def node(name: str, *depends_on: str, **fields: Any) -> scheduler_pb2.WorkflowTask:
    """A workflow task echoing its name."""
    fields.setdefault("command", f"echo {name}")
    spec = task_pb2.TaskSpec(name=name, **fields)
    return scheduler_pb2.WorkflowTask(local_name=name, spec=spec, depends_on=depends_on)


async def refused(stub: Stub, *tasks: scheduler_pb2.WorkflowTask) -> tuple[str, str]:
    """The field and message of an INVALID_ARGUMENT answer to this workflow."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SubmitWorkflow(scheduler_pb2.SubmitWorkflowRequest(tasks=tasks))
    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()
    metadata = dict(raised.value.trailing_metadata() or ())
    return str(metadata[FIELD_KEY]), str(raised.value.details())


async def test_a_twenty_node_dag_is_stored_at_once(stub: Stub, ledger: Ledger) -> None:
    """Four roots, sixteen dependents listed before what they wait for: all stored, split right."""
    roots = [node(f"root{i}") for i in range(4)]
    dependents = [
        node(f"n{i}", f"root{i % 4}", *([f"n{i - 1}"] if i % 4 else [])) for i in range(16)
    ]
    tasks = [*reversed(dependents), *roots]
    response = await stub.SubmitWorkflow(scheduler_pb2.SubmitWorkflowRequest(tasks=tasks))
    assert [task.spec.name for task in response.tasks] == [task.local_name for task in tasks]
    assert {task.spec.name: task.id for task in response.tasks} == dict(response.task_ids)
    stored = await ledger.list_tasks()
    assert len(stored) == 20
    assert {str(status.task.workflow_id) for status in stored} == {response.workflow_id}
    states = {
        status.task.spec.name: status.latest_run.state for status in stored if status.latest_run
    }
    assert {name for name, state in states.items() if state is RunState.PENDING} == {
        f"root{i}" for i in range(4)
    }
    assert {name for name, state in states.items() if state is RunState.BLOCKED} == {
        f"n{i}" for i in range(16)
    }
    n5 = await ledger.get_task(UUID(response.task_ids["n5"]))
    assert [str(d) for d in n5.spec.dependencies] == [
        response.task_ids["root1"],
        response.task_ids["n4"],
    ]


async def test_a_cycle_is_refused_naming_it(stub: Stub, ledger: Ledger) -> None:
    """The whole cycle is spelled out; not even the root outside it is written."""
    field, message = await refused(
        stub, node("root"), node("a", "root", "b"), node("b", "c"), node("c", "a")
    )
    assert field == "tasks[1].depends_on[1]"
    assert "a -> b -> c -> a" in message
    assert await ledger.list_tasks() == []


@pytest.mark.parametrize(
    ("tasks", "field"),
    [
        ((node("a"), node("b", "a", "nope")), "tasks[1].depends_on[1]"),
        ((node("a"), node("a")), "tasks[1].local_name"),
        ((node("a"), node("b", "a", "a")), "tasks[1].depends_on[1]"),
        ((node("a"), node("b", "a", command="")), "tasks[1].spec.command"),
        ((node("a"), node("b", dependencies=["x"])), "tasks[1].spec.dependencies"),
        ((node("a"), node("b", dependencies=[UNKNOWN_ID])), "tasks[1].spec.dependencies"),
        ((node("a"), node("b", region="mars")), "tasks[1].spec.region"),
        ((), "tasks"),
    ],
)
async def test_a_bad_workflow_is_refused_naming_the_field(
    stub: Stub, ledger: Ledger, tasks: tuple[scheduler_pb2.WorkflowTask, ...], field: str
) -> None:
    """INVALID_ARGUMENT with the offending field; nothing written."""
    got, message = await refused(stub, *tasks)
    assert got == field, message
    assert await ledger.list_tasks() == []


async def test_rest_stores_a_workflow(http: aiohttp.ClientSession, ledger: Ledger) -> None:
    """``name`` doubles as the local name; ``local_name`` may set it apart from the task name."""
    body = {
        "name": "etl",
        "tasks": [
            {"name": "extract", "command": "true", "priority": 5},
            {
                "local_name": "load",
                "name": "load-warehouse",
                "command": "true",
                "depends_on": ["extract"],
            },
        ],
    }
    async with http.post("/v1/workflows", json=body) as response:
        assert response.status == 201
        answer = await response.json()
    assert list(answer["task_ids"]) == ["extract", "load"]
    extract, load = answer["tasks"]
    assert extract["first_run"]["state"] == "RUN_STATE_PENDING"
    assert extract["task"]["spec"]["priority"] == 5
    assert load["first_run"]["state"] == "RUN_STATE_BLOCKED"
    assert load["task"]["spec"]["name"] == "load-warehouse"
    assert load["task"]["spec"]["dependencies"] == [answer["task_ids"]["extract"]]
    assert load["task"]["workflow_id"] == answer["workflow_id"]
    assert len(await ledger.list_tasks()) == 2


@pytest.mark.parametrize(
    ("tasks", "field"),
    [
        ([{"name": "a", "command": "true"}, {"name": "b", "command": ""}], "tasks[1].command"),
        ([{"name": "a", "command": "true", "bogus": 1}], "tasks[0].bogus"),
        ([{"name": "a", "command": "true", "depends_on": ["zzz"]}], "tasks[0].depends_on[0]"),
        ([{"name": "a", "command": "true", "depends_on": "a"}], "tasks[0].depends_on"),
        ("a", "tasks"),
    ],
)
async def test_rest_refuses_a_bad_workflow_naming_the_field(
    http: aiohttp.ClientSession, ledger: Ledger, tasks: Any, field: str
) -> None:
    """400 with the field as the body spells it (spec fields sit in the task object)."""
    async with http.post("/v1/workflows", json={"name": "w", "tasks": tasks}) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["field"] == field, error
    assert await ledger.list_tasks() == []
