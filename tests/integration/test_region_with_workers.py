"""The region with real worker daemons: runs flow from delegation to recorded results."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from test_region_harness import WAIT, claim, eventually, running_region, task

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Executor, RunState
from taskmesh.worker.daemon import Worker
from taskmesh.worker.settings import WorkerSettings


async def test_runs_delegated_to_the_region_are_executed_and_recorded(
    database_url: str, ledger: Ledger
) -> None:
    specs = [task(f"noop{i}") for i in range(6)]
    specs += [task(f"shell{i}", executor=Executor.SHELL, command=f"echo out{i}") for i in range(4)]
    runs = await claim(ledger, *specs)
    async with running_region(database_url) as region:
        workers = [
            Worker(
                WorkerSettings(
                    region="r1",
                    region_address=region.address,
                    worker_id=f"w{i}",
                    slots=2,
                    heartbeat_interval=timedelta(milliseconds=200),
                )
            )
            for i in range(2)
        ]
        serving = [asyncio.create_task(worker.run()) for worker in workers]
        await eventually(region.describe, lambda status: len(status.workers) == 2)
        response = await region.delegate(runs)
        assert len(response.accepted_run_ids) == len(runs)
        finished = await eventually(
            lambda: asyncio.gather(*(ledger.get_run(run.run_id) for run in runs)),
            lambda found: all(run.state.is_terminal for run in found),
        )
        assert {run.state for run in finished} == {RunState.SUCCEEDED}
        assert {run.worker_id for run in finished} == {"w0", "w1"}
        shell = [run for run in finished if run.output_tail]
        assert sorted(run.output_tail.strip() for run in shell) == [f"out{i}" for i in range(4)]
        await region.stop()  # asks the workers to drain: they finish and return
        await asyncio.wait_for(asyncio.gather(*serving), WAIT)
