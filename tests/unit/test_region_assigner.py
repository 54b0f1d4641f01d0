"""Placement, assignment rounds and worker sessions, on the region's in-memory state.

The ledger is an in-memory transition store; everything of the region's own is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from taskmesh.common.model import (
    ClaimedRun,
    Executor,
    Placement,
    RunState,
    Transition,
    TransitionOutcome,
    TransitionRefusal,
)
from taskmesh.common.rpc import region_pb2
from taskmesh.common.rpc.values import EXECUTORS, RUN_STATES, timestamp
from taskmesh.common.topology import BreakerConfig, RegionBreakers, RegionConfig
from taskmesh.region import messages
from taskmesh.region.assigner import Assigner
from taskmesh.region.breakers import BreakerBoard, ExecutionFailure
from taskmesh.region.holdings import QueuedRun
from taskmesh.region.ledger_writer import LedgerWriter
from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_registry import ConnectedWorker
from taskmesh.region.worker_sessions import WorkerSessions

NOW = datetime.now(UTC)
BREAKERS = RegionBreakers(
    worker=BreakerConfig(fail_max=3, reset_timeout=timedelta(minutes=5)),
    kind=BreakerConfig(fail_max=2, reset_timeout=timedelta(minutes=5)),
)


class MemoryStore:
    """Applies every transition."""

    def __init__(self) -> None:
        self.written: list[Transition] = []

    async def record_transitions(
        self, items: Sequence[Transition], *, lost_retry_limit: int
    ) -> list[TransitionOutcome]:
        self.written += items
        return [TransitionOutcome(item) for item in items]


class Region:
    """A region's state with its writer running, and helpers to drive it."""

    def __init__(self, store: MemoryStore, breakers: RegionBreakers = BREAKERS) -> None:
        self.store = store
        writer = LedgerWriter(store, lost_retry_limit=3)
        self.runtime = RegionRuntime(RegionConfig(name="r1"), writer, BreakerBoard(breakers))
        self.sessions = WorkerSessions(self.runtime)
        self.assigner = Assigner(self.runtime)

    def worker(self, worker_id: str, slots: int = 2, **fields: Any) -> ConnectedWorker:
        executors = fields.pop("executors", (Executor.NOOP, Executor.SHELL))
        register = region_pb2.RegisterWorker(
            worker_id=worker_id, slots=slots, executors=[EXECUTORS[e] for e in executors], **fields
        )
        worker, _ = self.sessions.register(register)
        return worker

    def queue(self, name: str, priority: int = 0, **fields: Any) -> ClaimedRun:
        claimed = claimed_run(name, priority, **fields)
        self.runtime.enqueue(QueuedRun(claimed, priority, self.runtime.clock()))
        return claimed

    async def written(self) -> list[tuple[str, RunState]]:
        await self.runtime.writer.flush()
        return [(str(t.run_id), t.target) for t in self.store.written]


def claimed_run(name: str, priority: int = 0, **fields: Any) -> ClaimedRun:
    values: dict[str, Any] = {
        "run_id": uuid4(),
        "task_id": uuid4(),
        "task_name": name,
        "attempt": 1,
        "epoch": 1,
        "priority": priority,
        "region": "r1",
        "due_at": NOW,
        "delegated_at": NOW,
        "command": "true",
        "executor": Executor.NOOP,
        "args": (),
        "kind": "default",
        "placement": Placement.PREFER,
    }
    return ClaimedRun(**{**values, **fields})


async def sent(worker: ConnectedWorker) -> list[region_pb2.RegionMessage]:
    """Every message queued for the worker so far."""
    out = []
    while True:
        try:
            message = await asyncio.wait_for(worker.next_message(), 0.01)
        except TimeoutError:
            return out
        if message is not None:
            out.append(message)


def assigned_names(messages_: list[region_pb2.RegionMessage]) -> list[list[str]]:
    return [[a.task_name for a in m.assign.assignments] for m in messages_ if m.HasField("assign")]


@pytest.fixture
async def region() -> AsyncIterator[Region]:
    region = Region(MemoryStore())
    task = asyncio.create_task(region.runtime.writer.run())
    yield region
    region.runtime.writer.stop()
    await asyncio.wait_for(task, 5)


async def test_placement_prefers_the_least_loaded_then_takes_turns(region: Region) -> None:
    busy, first, second = region.worker("busy"), region.worker("a"), region.worker("b")
    region.queue("x")
    region.assigner.assign_round()  # goes to "busy" (all equal, first in turn)
    assert assigned_names(await sent(busy)) == [["x"]]
    registry = region.runtime.registry
    picks = [registry.pick(Executor.NOOP) for _ in range(4)]
    assert [w.id for w in picks if w] == [first.id, second.id, first.id, second.id]


async def test_a_worker_never_gets_more_than_its_free_slots(region: Region) -> None:
    worker = region.worker("w", slots=4)
    region.sessions.heartbeat(worker, region_pb2.WorkerHeartbeat(free_slots=1))
    for name in ("a", "b", "c"):
        region.queue(name)
    assert region.assigner.assign_round() == 1
    region.sessions.heartbeat(worker, region_pb2.WorkerHeartbeat(free_slots=4))
    assert region.assigner.assign_round() == 2  # 4 slots, 1 already held: 3 at most, 2 queued
    region.runtime.registry.mark_draining(worker)
    region.queue("d")
    assert region.assigner.assign_round() == 0


async def test_a_round_sends_one_batch_per_worker_best_first(region: Region) -> None:
    worker = region.worker("w", slots=2)
    low, high, middle = region.queue("p1", 1), region.queue("p9", 9), region.queue("p5", 5)
    assert region.assigner.assign_round() == 2
    assert assigned_names(await sent(worker)) == [["p9", "p5"]]
    assert await region.written() == [
        (str(high.run_id), RunState.ASSIGNED),
        (str(middle.run_id), RunState.ASSIGNED),
    ]
    assert str(low.run_id) in region.runtime.queue


async def test_an_open_kind_breaker_keeps_its_runs_queued(region: Region) -> None:
    worker = region.worker("w", slots=4)
    for _ in range(2):
        region.runtime.board.kind("flaky").fail(ExecutionFailure("boom"))
    flaky = region.queue("flaky", 10, kind="flaky")
    region.queue("steady", 0, kind="steady")
    assert region.assigner.assign_round() == 1
    assert assigned_names(await sent(worker)) == [["steady"]]
    assert str(flaky.run_id) in region.runtime.queue


async def test_a_run_no_worker_can_execute_waits_without_blocking_others(region: Region) -> None:
    worker = region.worker("w", executors=[Executor.NOOP])
    shell = region.queue("shell", 10, executor=Executor.SHELL)
    waited = region.runtime.queue.effective_priority(str(shell.run_id))
    region.queue("noop", 0)
    assert region.assigner.assign_round() == 1
    assert assigned_names(await sent(worker)) == [["noop"]]
    assert region.runtime.queue.effective_priority(str(shell.run_id)) >= (waited or 0)


async def test_a_run_past_its_schedule_to_start_bound_times_out(region: Region) -> None:
    region.worker("w")
    late = region.queue(
        "late", due_at=NOW - timedelta(hours=1), schedule_to_start_timeout=timedelta(seconds=1)
    )
    assert region.assigner.assign_round() == 0
    assert await region.written() == [(str(late.run_id), RunState.TIMED_OUT)]


async def test_a_departing_worker_requeues_unstarted_runs_and_loses_started_ones(
    region: Region,
) -> None:
    worker = region.worker("w")
    started, waiting = region.queue("started", 5), region.queue("waiting", 1)
    region.assigner.assign_round()
    ref = messages.run_ref(started.run_id, started.epoch)
    region.sessions.started(worker, region_pb2.RunsStarted(runs=[region_pb2.RunStarted(run=ref)]))
    region.sessions.disconnect(worker, "broke its stream", failure=True)
    written = await region.written()
    assert set(written[-2:]) == {
        (str(started.run_id), RunState.LOST),
        (str(waiting.run_id), RunState.DELEGATED),
    }
    assert str(waiting.run_id) in region.runtime.queue
    assert region.runtime.board.worker("w").failures == 1


async def test_a_reconnecting_worker_abandons_runs_the_region_gave_up(region: Region) -> None:
    worker = region.worker("w")
    given_up = region.queue("gone")
    region.assigner.assign_round()
    ref = messages.run_ref(given_up.run_id, given_up.epoch)
    region.sessions.started(worker, region_pb2.RunsStarted(runs=[region_pb2.RunStarted(run=ref)]))
    region.sessions.disconnect(worker, "went silent", failure=True)
    unknown = messages.run_ref(uuid4(), 4)
    back, abandon = region.sessions.register(
        region_pb2.RegisterWorker(
            worker_id="w", slots=2, executors=[EXECUTORS[Executor.NOOP]], running=[ref, unknown]
        )
    )
    assert abandon == [(given_up.run_id, given_up.epoch)]
    assert list(back.held) == [messages.run_key(unknown)[0]]  # adopted: the ledger fences it


async def test_a_late_result_of_a_requeued_run_is_recorded_only_from_its_worker(
    region: Region,
) -> None:
    """The run went back to the queue when its worker's stream broke; it had started after all.

    Another worker's report of it is acked but not recorded; its own worker's result returns
    the run to that worker (recorded assigned, then the result) instead of running it again.
    """
    worker = region.worker("w")
    run = region.queue("r")
    region.assigner.assign_round()
    region.sessions.disconnect(worker, "broke its stream", failure=True)  # run back in queue
    other, back = region.worker("x"), region.worker("w")
    result = region_pb2.RunResult(
        run=messages.run_ref(run.run_id, run.epoch),
        state=RUN_STATES[RunState.CANCELLED],
        started_at=timestamp(NOW),
        finished_at=timestamp(NOW),
    )
    region.sessions.results(other, region_pb2.RunResults(results=[result]))
    written = await region.written()
    assert (str(run.run_id), RunState.CANCELLED) not in written
    acks = [m for m in await sent(other) if m.HasField("ack")]
    assert [r.run_id for m in acks for r in m.ack.runs] == [str(run.run_id)]
    region.sessions.results(back, region_pb2.RunResults(results=[result]))
    written = await region.written()
    assert written[-2:] == [
        (str(run.run_id), RunState.ASSIGNED),
        (str(run.run_id), RunState.CANCELLED),
    ]
    assert str(run.run_id) not in region.runtime.queue
    acks = [m for m in await sent(back) if m.HasField("ack")]
    assert [r.run_id for m in acks for r in m.ack.runs] == [str(run.run_id)]


async def test_a_due_kind_breaker_gets_one_trial_run_without_being_polled() -> None:
    quick = BreakerConfig(fail_max=1, reset_timeout=timedelta(seconds=1))
    region = Region(MemoryStore(), RegionBreakers(worker=BREAKERS.worker, kind=quick))
    worker = region.worker("w", slots=4)
    region.runtime.board.kind("flaky").fail(ExecutionFailure("boom"))
    for index in range(3):
        region.queue(f"flaky{index}", kind="flaky")
    writing = asyncio.create_task(region.runtime.writer.run())  # assignments are sent once written
    assigning = asyncio.create_task(region.assigner.run())
    try:
        assert await sent(worker) == []  # open: held back
        await asyncio.sleep(1.2)  # the reset timeout passes; nothing else wakes the assigner
        (trial,) = [a for m in await sent(worker) for a in m.assign.assignments]
        await asyncio.sleep(0.05)
        assert await sent(worker) == []  # one trial at a time
        result = region_pb2.RunResult(
            run=trial.run,
            state=RUN_STATES[RunState.SUCCEEDED],
            started_at=timestamp(NOW),
            finished_at=timestamp(NOW),
        )
        region.sessions.results(worker, region_pb2.RunResults(results=[result]))
        await asyncio.sleep(0.05)
        assert assigned_names([m for m in await sent(worker) if m.HasField("assign")]) == [
            ["flaky1", "flaky2"]
        ]
    finally:
        region.assigner.stop()
        await asyncio.wait_for(assigning, 5)
        region.runtime.writer.stop()
        await asyncio.wait_for(writing, 5)


class FencedStore(MemoryStore):
    """Refuses every ``assigned`` as stale: the runs were re-delegated elsewhere meanwhile."""

    async def record_transitions(
        self, items: Sequence[Transition], *, lost_retry_limit: int
    ) -> list[TransitionOutcome]:
        self.written += items
        return [
            TransitionOutcome(item, TransitionRefusal.STALE_EPOCH, RunState.PENDING, 9)
            for item in items
        ]


async def test_runs_the_ledger_refuses_to_assign_are_never_sent_to_a_worker() -> None:
    """Assignments are written first; a fenced-off run is dropped, its slot freed, counted."""
    region = Region(FencedStore())
    writing = asyncio.create_task(region.runtime.writer.run())
    try:
        worker = region.worker("w", slots=2)
        region.queue("stale1")
        region.queue("stale2")
        assert region.assigner.assign_round() == 2
        await region.runtime.writer.flush()
        assert [m for m in await sent(worker) if m.HasField("assign")] == []
        assert worker.free_slots == 2
        assert region.runtime.registry.running == 0
        assert region.runtime.writer.stale_refusals == 2
        assert len(region.runtime.queue) == 0  # dropped, not requeued: it is not ours any more
    finally:
        region.runtime.writer.stop()
        await asyncio.wait_for(writing, 5)
