"""``taskmesh watch`` and ``Client.watch`` against a real master: live events, filters, errors.

The CLI runs as a subprocess (it is a synchronous program with its own gRPC channel) while the
master serves in the test's event loop on a real ledger, delegating to fake regions.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import grpc.aio
import pytest
from test_master_harness import FakeRegion, RunningMaster, fake_regions, make_topology
from test_master_harness import running_master as serve

from taskmesh.common.ledger import Ledger
from taskmesh.common.rpc import scheduler_pb2, scheduler_pb2_grpc, task_pb2

WATCH_TIMEOUT = 30.0  # generous: only catches a hang


@pytest.fixture
async def served(ledger: Ledger) -> AsyncIterator[RunningMaster]:
    """A master on the test ledger with fake eu and us regions that accept everything."""
    regions: dict[str, FakeRegion]
    async with fake_regions("eu", "us") as regions, serve(make_topology(), ledger, regions) as up:
        yield up


async def submit(master: RunningMaster, name: str, region: str) -> str:
    """Submit a task over gRPC; returns its id."""
    async with grpc.aio.insecure_channel(master.grpc) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        spec = task_pb2.TaskSpec(name=name, command="true", region=region)
        answer = await stub.Submit(scheduler_pb2.SubmitRequest(spec=spec))
    return str(answer.task.id)


async def taskmesh(*argv: str) -> tuple[int, str, str]:
    """Run the ``taskmesh`` CLI; returns (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskmesh",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), WATCH_TIMEOUT)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_watch_replays_and_follows_one_tasks_transitions(served: RunningMaster) -> None:
    """JSON lines: the replayed creation, then the live delegation, of that task only."""
    task_id = await submit(served, "watched", "eu")
    await submit(served, "other", "us")
    status, out, err = await taskmesh(
        "watch",
        "--master",
        served.grpc,
        "--task",
        task_id,
        "--after-id",
        "1",
        "--json",
        "--count",
        "1",
    )
    assert status == 0, err
    (line,) = out.splitlines()
    event = json.loads(line)
    assert (event["task_id"], event["to_state"], event["region"]) == (task_id, "delegated", "eu")
    assert event["from_state"] == "pending"


async def test_watch_filters_by_region_and_state_as_text(served: RunningMaster) -> None:
    """Human lines name the transition and the region; other regions' events are left out."""
    ids = [await submit(served, f"t{n}", region) for n, region in enumerate(["eu", "us", "us"])]
    status, out, err = await taskmesh(
        "watch",
        "--master",
        served.grpc,
        "--after-id",
        "1",
        "--region",
        "us",
        "--state",
        "delegated",
        "--count",
        "2",
    )
    assert status == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    assert all("pending -> delegated" in line and "region=us" in line for line in lines)
    assert {line.split("task ")[1].split()[0] for line in lines} == set(ids[1:])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--count", "0"], "--count"),
        (["--after-id", "424242"], "after_id"),
        (["--workflow", "not-a-uuid"], "workflow_id"),
    ],
)
async def test_bad_watch_requests_name_the_field(
    served: RunningMaster, argv: list[str], message: str
) -> None:
    """Each refusal exits non-zero with one line naming what to change."""
    status, _, err = await taskmesh("watch", "--master", served.grpc, *argv)
    assert status != 0
    assert message in err
    assert "Traceback" not in err
