"""The region's master-facing API: Delegate, Reprioritise, Cancel and Describe, for real."""

from __future__ import annotations

from dataclasses import replace

from test_region_harness import (
    REGION,
    claim,
    connected,
    run_state,
    running_region,
    task,
)

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import Executor, RunState
from taskmesh.common.rpc import cluster_pb2, region_pb2

Reason = region_pb2.RefusalReason


async def test_delegate_accepts_up_to_credit_and_refuses_the_rest(
    database_url: str, ledger: Ledger
) -> None:
    runs = await claim(ledger, *(task(f"t{i}") for i in range(5)))
    async with running_region(database_url, capacity=3) as region:
        response = await region.delegate(runs)
        assert list(response.accepted_run_ids) == [str(run.run_id) for run in runs[:3]]
        assert [(r.run_id, r.reason) for r in response.refused] == [
            (str(run.run_id), Reason.REFUSAL_REASON_NO_CREDIT) for run in runs[3:]
        ]
        assert (response.credit, response.queue_depth) == (0, 3)


async def test_delegation_is_idempotent_and_fenced_by_epoch(
    database_url: str, ledger: Ledger
) -> None:
    (run,) = await claim(ledger, task())
    async with running_region(database_url, capacity=5) as region:
        first = await region.delegate([run])
        again = await region.delegate([run])
        assert list(first.accepted_run_ids) == list(again.accepted_run_ids) == [str(run.run_id)]
        assert (again.credit, again.queue_depth) == (4, 1)
        newer = replace(run, epoch=run.epoch + 1, priority=9)
        assert list((await region.delegate([newer])).accepted_run_ids) == [str(run.run_id)]
        stale = await region.delegate([run])
        assert [r.reason for r in stale.refused] == [Reason.REFUSAL_REASON_STALE_EPOCH]
        assert (stale.credit, stale.queue_depth) == (4, 1)


async def test_runs_for_another_region_or_an_unsupported_executor_are_refused(
    database_url: str, ledger: Ledger
) -> None:
    elsewhere, shell = await claim(ledger, task("a"), task("b", executor=Executor.SHELL))
    async with (
        running_region(database_url) as region,
        connected(region, "w1", executors=[Executor.NOOP]),
    ):
        response = await region.delegate([replace(elsewhere, region="r2"), shell])
        assert [r.reason for r in response.refused] == [
            Reason.REFUSAL_REASON_INVALID,
            Reason.REFUSAL_REASON_UNSUPPORTED,
        ]


async def test_cancel_dequeues_queued_runs_and_records_them(
    database_url: str, ledger: Ledger
) -> None:
    kept, cancelled = await claim(ledger, task("kept"), task("cancelled"))
    async with running_region(database_url) as region:
        await region.delegate([kept, cancelled])
        ref = region_pb2.RunRef(run_id=str(cancelled.run_id), epoch=cancelled.epoch)
        request = region_pb2.CancelRunsRequest(runs=[ref], reason="operator said so")
        response = await region.stub.Cancel(request)
        assert list(response.dequeued_run_ids) == [str(cancelled.run_id)]
        run = await ledger.get_run(cancelled.run_id)  # recorded before the answer
        assert (run.state, run.error) == (RunState.CANCELLED, "operator said so")
        retried = await region.stub.Cancel(request)  # e.g. after a lost answer
        assert list(retried.dequeued_run_ids) == [str(cancelled.run_id)]
        assert (await region.describe()).queue_depth == 1


async def test_cancel_signals_the_worker_of_an_assigned_run(
    database_url: str, ledger: Ledger
) -> None:
    (run,) = await claim(ledger, task())
    async with running_region(database_url) as region, connected(region, "w1") as worker:
        await region.delegate([run])
        (assignment,) = await worker.assigned(1)
        request = region_pb2.CancelRunsRequest(runs=[assignment.run], reason="stop")
        response = await region.stub.Cancel(request)
        assert list(response.signalled_run_ids) == [str(run.run_id)]
        message = await worker.wait_for(lambda m: m.WhichOneof("body") == "cancel")
        assert [r.run_id for r in message.cancel.runs] == [str(run.run_id)]
        await worker.finish(assignment.run, RunState.CANCELLED)
        await run_state(ledger, run.run_id, RunState.CANCELLED)


async def test_reprioritise_changes_queued_runs_only(database_url: str, ledger: Ledger) -> None:
    low, high = await claim(ledger, task("low", priority=1), task("high", priority=5))
    async with running_region(database_url) as region:
        await region.delegate([low, high])
        boost = region_pb2.RunPriority(
            run=region_pb2.RunRef(run_id=str(low.run_id), epoch=low.epoch), priority=50
        )
        unknown = region_pb2.RunPriority(
            run=region_pb2.RunRef(run_id="00000000-0000-0000-0000-000000000000", epoch=1)
        )
        request = region_pb2.ReprioritiseRequest(runs=[boost, unknown])
        assert list((await region.stub.Reprioritise(request)).run_ids) == [str(low.run_id)]
        async with connected(region, "w1", slots=1) as worker:
            (first,) = await worker.assigned(1)
            assert first.run.run_id == str(low.run_id)


async def test_describe_reports_queue_workers_and_breakers(
    database_url: str, ledger: Ledger
) -> None:
    runs = await claim(ledger, task("a"), task("b"), task("c"))
    async with running_region(database_url, capacity=10) as region:
        async with connected(region, "w1", slots=2) as worker:
            await region.delegate(runs)
            await worker.assigned(2)
            status = await region.describe()
        assert (status.name, status.address) == (REGION, region.address)
        assert status.state == cluster_pb2.REGION_STATE_UP
        assert (status.queue_depth, status.credit, status.running) == (1, 9, 2)
        assert (status.total_slots, status.free_slots) == (2, 0)
        (described,) = status.workers
        assert (described.id, described.slots, described.running) == ("w1", 2, 2)
        assert described.breaker == cluster_pb2.BREAKER_STATE_CLOSED
        assert [(b.kind, b.state) for b in status.kind_breakers] == [
            ("default", cluster_pb2.BREAKER_STATE_CLOSED)
        ]
