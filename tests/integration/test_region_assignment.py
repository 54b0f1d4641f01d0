"""Assignment to workers over real streams: order, placement, credit, acks, loss, breakers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from test_region_harness import (
    FakeWorker,
    RunningRegion,
    claim,
    connected,
    eventually,
    run_state,
    running_region,
    task,
)

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import ClaimedRun, Executor, RunState
from taskmesh.common.rpc import cluster_pb2, region_pb2
from taskmesh.common.rpc.values import RUN_STATES, timestamp
from taskmesh.common.topology import BreakerConfig, RegionBreakers

QUIET = 0.5  # seconds to wait for something that must not happen
BREAKER_OPEN = cluster_pb2.BREAKER_STATE_OPEN
BREAKER_HALF_OPEN = cluster_pb2.BREAKER_STATE_HALF_OPEN
BREAKER_CLOSED = cluster_pb2.BREAKER_STATE_CLOSED


async def test_assignment_order_follows_priority(database_url: str, ledger: Ledger) -> None:
    priorities = [0, 5, -3, 10]
    runs = await claim(ledger, *(task(f"p{p}", priority=p) for p in priorities))
    async with running_region(database_url) as region:
        await region.delegate(runs)
        async with connected(region, "w1", slots=1) as worker:
            for count in range(1, 5):
                assignment = (await worker.assigned(count))[-1]
                await worker.start(assignment.run)
                await worker.finish(assignment.run, RunState.SUCCEEDED)
            names = [a.task_name for a in worker.assignments()]
    assert names == ["p10", "p5", "p0", "p-3"]


async def test_the_least_loaded_worker_gets_the_run(database_url: str, ledger: Ledger) -> None:
    runs = await claim(ledger, *(task(f"t{i}") for i in range(6)))
    async with running_region(database_url) as region, connected(region, "a", slots=4) as a:
        await region.delegate(runs[:2])
        await a.assigned(2)
        async with connected(region, "b", slots=4) as b:
            await region.delegate(runs[2:4])
            await b.assigned(2)
            await region.delegate(runs[4:])
            await a.assigned(3)
            await b.assigned(3)
            await asyncio.sleep(QUIET)
            assert (len(a.assignments()), len(b.assignments())) == (3, 3)


async def test_equally_loaded_workers_take_turns(database_url: str, ledger: Ledger) -> None:
    runs = await claim(ledger, *(task(f"t{i}") for i in range(3)))
    async with running_region(database_url) as region:
        workers = [FakeWorker(region.address, f"w{i}", slots=2) for i in range(3)]
        for worker in workers:
            await worker.connect()
        for run in runs:  # one at a time, finished before the next: loads are equal each time
            await region.delegate([run])
            run_id = str(run.run_id)
            holder = await eventually(lambda r=run_id: _holder_of(workers, r), bool)
            assert holder is not None
            ref = holder.assignments()[-1].run
            await holder.start(ref)
            await holder.finish(ref, RunState.SUCCEEDED)
            await holder.wait_for(lambda m, r=run_id: r in {x.run_id for x in m.ack.runs})
        assert sorted(len(w.assignments()) for w in workers) == [1, 1, 1]
        for worker in workers:
            await worker.drop()


async def _holder_of(workers: list[FakeWorker], run_id: str) -> FakeWorker | None:
    """The worker that was assigned ``run_id``, if any yet."""
    for worker in workers:
        if any(a.run.run_id == run_id for a in worker.assignments()):
            return worker
    return None


async def test_a_worker_gets_runs_within_its_credit_and_acks_after_the_ledger(
    database_url: str, ledger: Ledger
) -> None:
    runs = await claim(ledger, *(task(f"t{i}") for i in range(4)))
    async with running_region(database_url) as region, connected(region, "w1", slots=2) as worker:
        await worker.heartbeat(free_slots=1)  # busy with something else: one slot free
        await region.delegate(runs)
        (first,) = await worker.assigned(1)
        await asyncio.sleep(QUIET)
        assert len(worker.assignments()) == 1
        await worker.heartbeat(free_slots=2)
        second = (await worker.assigned(2))[1]
        await asyncio.sleep(QUIET)
        assert len(worker.assignments()) == 2  # never past its 2 slots
        await worker.start(first.run, second.run)
        await run_state(ledger, runs[0].run_id, RunState.RUNNING)
        await worker.finish(first.run, RunState.SUCCEEDED)
        await worker.wait_for(lambda m: m.WhichOneof("body") == "ack")
        # The ack came after the commit: the ledger shows the result at once.
        done = await ledger.get_run(runs[0].run_id)
        assert (done.state, done.worker_id) == (RunState.SUCCEEDED, "w1")
        assert worker.acked() == {first.run.run_id}
        third = (await worker.assigned(3))[2]  # the freed slot is filled
        assert third.run.run_id == str(runs[2].run_id)


@pytest.mark.parametrize("how", ["dropped", "silent"])
async def test_a_lost_worker_returns_unstarted_runs_and_loses_running_ones(
    database_url: str, ledger: Ledger, how: str
) -> None:
    started_run, waiting_run = await claim(ledger, task("started"), task("waiting"))
    timeout = timedelta(seconds=1 if how == "silent" else 30)
    async with running_region(database_url, worker_heartbeat_timeout=timeout) as region:
        worker = FakeWorker(region.address, "w1", slots=2)
        await worker.connect()
        await region.delegate([started_run, waiting_run])
        first, _ = await worker.assigned(2)
        await worker.start(first.run)
        # A silent worker may be declared lost before this poll sees ``running``: wait for the
        # start to be recorded, whichever state the run is in by then.
        await eventually(
            lambda: ledger.get_run(started_run.run_id), lambda run: run.started_at is not None
        )
        if how == "dropped":
            await worker.drop()
        lost = await run_state(ledger, started_run.run_id, RunState.LOST)
        assert "w1" in lost.error
        retries = await ledger.list_runs(started_run.task_id)
        assert [(r.attempt, r.state) for r in retries] == [
            (1, RunState.LOST),
            (2, RunState.PENDING),
        ]
        await run_state(ledger, waiting_run.run_id, RunState.DELEGATED)
        async with connected(region, "w2") as other:
            (assignment,) = await other.assigned(1)
            assert assignment.run.run_id == str(waiting_run.run_id)
        if how == "silent":
            await worker.drop()


async def test_a_kind_breaker_holds_that_kind_while_others_proceed(
    database_url: str, ledger: Ledger
) -> None:
    breakers = RegionBreakers(kind=BreakerConfig(fail_max=2, reset_timeout=timedelta(minutes=5)))
    flaky = await claim(ledger, *(task(f"flaky{i}", kind="flaky") for i in range(3)))
    (steady,) = await claim(ledger, task("steady", kind="steady"))
    async with running_region(database_url, breakers=breakers) as region:
        async with connected(region, "w1", slots=4) as worker:
            await region.delegate(flaky[:2])
            for assignment in await worker.assigned(2):
                await worker.start(assignment.run)
                await worker.finish(assignment.run, RunState.FAILED, exit_code=1)
            for run in flaky[:2]:
                await run_state(ledger, run.run_id, RunState.FAILED)
            await region.delegate([flaky[2], steady])
            third = (await worker.assigned(3))[2]
            assert third.task_name == "steady"
            await asyncio.sleep(QUIET)
            assert len(worker.assignments()) == 3
            status = await region.describe()
        assert status.queue_depth == 1
        states = {b.kind: (b.state, b.failures) for b in status.kind_breakers}
        assert states["flaky"][0] == cluster_pb2.BREAKER_STATE_OPEN
        assert states["steady"] == (cluster_pb2.BREAKER_STATE_CLOSED, 0)


async def test_a_run_given_back_unstarted_is_assigned_again(
    database_url: str, ledger: Ledger
) -> None:
    (run,) = await claim(ledger, task())
    async with running_region(database_url) as region, connected(region, "w1") as worker:
        await region.delegate([run])
        (assignment,) = await worker.assigned(1)
        refusal = region_pb2.RunResult(
            run=assignment.run,
            state=RUN_STATES[RunState.FAILED],
            error="not started: no free slot",
            finished_at=timestamp(datetime.now(UTC)),
        )
        await worker.send(
            region_pb2.WorkerMessage(results=region_pb2.RunResults(results=[refusal]))
        )
        await worker.wait_for(lambda m: m.WhichOneof("body") == "ack")
        assert worker.acked() == {assignment.run.run_id}
        await run_state(ledger, run.run_id, RunState.DELEGATED)
        await asyncio.sleep(QUIET)
        assert len(worker.assignments()) == 1  # nothing more until it advertises room again
        await worker.heartbeat(free_slots=2)
        again = (await worker.assigned(2))[1]
        assert again.run == assignment.run
        await run_state(ledger, run.run_id, RunState.ASSIGNED)


async def taken_back_unstarted(
    region: RunningRegion, ledger: Ledger, run: ClaimedRun
) -> region_pb2.RunRef:
    """Assign ``run`` to worker w1, whose stream then breaks before it reports the start."""
    first = FakeWorker(region.address, "w1")
    await first.connect()
    await region.delegate([run])
    (assignment,) = await first.assigned(1)
    await run_state(ledger, run.run_id, RunState.ASSIGNED)
    await first.drop()
    await run_state(ledger, run.run_id, RunState.DELEGATED)  # back in the queue, unstarted
    return assignment.run


async def test_a_run_taken_back_unstarted_that_did_start_returns_to_its_worker(
    database_url: str, ledger: Ledger
) -> None:
    """The worker reconnects reporting the run running: the region gives it back to the
    worker, instead of abandoning it there and sending the same attempt out again (run twice,
    or ignored by that worker as a duplicate and left ``assigned`` for good)."""
    (run,) = await claim(ledger, task())
    async with running_region(database_url) as region:
        ref = await taken_back_unstarted(region, ledger, run)
        again = FakeWorker(region.address, "w1")
        welcome = await again.connect(running=[ref])
        try:
            assert list(welcome.abandon) == []
            held = await run_state(ledger, run.run_id, RunState.RUNNING)
            assert held.worker_id == "w1"
            await asyncio.sleep(QUIET)
            assert again.assignments() == []  # not sent out again
            await again.finish(ref, RunState.SUCCEEDED)
            await run_state(ledger, run.run_id, RunState.SUCCEEDED)
            assert (await region.describe()).queue_depth == 0
        finally:
            await again.drop()


async def test_a_result_of_a_run_taken_back_unstarted_is_recorded_not_run_again(
    database_url: str, ledger: Ledger
) -> None:
    """The run finished while the stream was down: its result, re-sent on the new stream, is
    recorded and the run leaves the queue instead of being executed a second time."""
    (run,) = await claim(ledger, task())
    async with running_region(database_url) as region:
        ref = await taken_back_unstarted(region, ledger, run)
        # Back without the no-op executor, so the queued run cannot be re-assigned meanwhile.
        again = FakeWorker(region.address, "w1", executors=(Executor.SHELL,))
        await again.connect()
        try:
            await again.finish(ref, RunState.SUCCEEDED)
            finished = await run_state(ledger, run.run_id, RunState.SUCCEEDED)
            assert finished.worker_id == "w1"
            assert (await region.describe()).queue_depth == 0
            assert again.acked() == {ref.run_id}
        finally:
            await again.drop()


async def test_a_kind_breaker_is_half_open_while_its_trial_runs(
    database_url: str, ledger: Ledger
) -> None:
    """The region's view shows the trial: open, half-open while it runs, closed once it passed."""
    reset = timedelta(milliseconds=300)
    breakers = RegionBreakers(kind=BreakerConfig(fail_max=1, reset_timeout=reset))
    first, trial, after = await claim(ledger, *(task(f"k{i}", kind="k") for i in range(3)))

    def kind_state(status: cluster_pb2.RegionStatus) -> int:
        return next(b.state for b in status.kind_breakers if b.kind == "k")

    async with (
        running_region(database_url, breakers=breakers) as region,
        connected(region, "w1", slots=4) as worker,
    ):
        await region.delegate([first])
        (assigned,) = await worker.assigned(1)
        await worker.start(assigned.run)
        await worker.finish(assigned.run, RunState.FAILED, exit_code=1)
        await eventually(region.describe, lambda s: kind_state(s) == BREAKER_OPEN)
        await region.delegate([trial, after])
        one = (await worker.assigned(2))[1]  # once due, exactly one trial goes out
        assert one.run.run_id == str(trial.run_id)
        status = await region.describe()
        assert (kind_state(status), status.queue_depth) == (BREAKER_HALF_OPEN, 1)
        await asyncio.sleep(QUIET)
        assert len(worker.assignments()) == 2  # the other run waits for the trial's outcome
        await worker.start(one.run)
        await worker.finish(one.run, RunState.SUCCEEDED)
        await eventually(region.describe, lambda s: kind_state(s) == BREAKER_CLOSED)
        await worker.assigned(3)


async def test_a_worker_whose_stream_keeps_breaking_gets_no_runs_while_its_breaker_is_open(
    database_url: str, ledger: Ledger
) -> None:
    """Two broken streams in a row open w1's breaker: the view shows it, and w2 gets the runs."""
    breakers = RegionBreakers(worker=BreakerConfig(fail_max=2, reset_timeout=timedelta(minutes=5)))
    runs = await claim(ledger, task("a"), task("b"))
    async with running_region(database_url, breakers=breakers) as region:
        for _ in range(2):
            flaky = FakeWorker(region.address, "w1")
            await flaky.connect()
            await flaky.drop()
            await eventually(region.describe, lambda status: len(status.workers) == 0)
        async with connected(region, "w1") as w1, connected(region, "w2") as w2:
            status = await region.describe()
            breakers_seen = {w.id: w.breaker_status for w in status.workers}
            assert breakers_seen["w1"].state == BREAKER_OPEN
            assert breakers_seen["w1"].failures == 2
            assert breakers_seen["w1"].HasField("trial_at")
            assert breakers_seen["w2"].state == BREAKER_CLOSED
            await region.delegate(runs)
            assert len(await w2.assigned(2)) == 2
            await asyncio.sleep(QUIET)
            assert w1.assignments() == []
