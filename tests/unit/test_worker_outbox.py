"""The worker's outbox: results kept until acked, sent once per stream, all re-sent on a new one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from taskmesh.common.model import RunState
from taskmesh.worker.messages import Result, RunKey
from taskmesh.worker.outbox import Outbox


def result(run_id: str, epoch: int = 1) -> Result:
    return Result(RunKey(run_id, epoch), "task", RunState.SUCCEEDED, datetime.now(UTC))


def test_results_are_sent_once_per_stream_oldest_first() -> None:
    outbox = Outbox()
    outbox.add(result("a"))
    outbox.add(result("b"))
    assert [r.key.run_id for r in outbox.take_unsent()] == ["a", "b"]
    assert outbox.take_unsent() == []
    outbox.add(result("c"))
    assert [r.key.run_id for r in outbox.take_unsent()] == ["c"]
    assert len(outbox) == 3


def test_a_new_stream_resends_every_unacked_result() -> None:
    outbox = Outbox()
    for run_id in "abc":
        outbox.add(result(run_id))
    outbox.take_unsent()
    assert outbox.ack([RunKey("b", 1)]) == [RunKey("b", 1)]
    outbox.resend_all()
    assert [r.key.run_id for r in outbox.take_unsent()] == ["a", "c"]


def test_acks_match_run_and_epoch_and_unknown_acks_are_ignored() -> None:
    outbox = Outbox()
    outbox.add(result("a", epoch=2))
    assert outbox.ack([RunKey("a", 1), RunKey("zzz", 2)]) == []
    assert RunKey("a", 2) in outbox
    assert outbox.ack([RunKey("a", 2)]) == [RunKey("a", 2)]
    assert len(outbox) == 0
    assert outbox.keys == ()


def test_an_acked_unsent_result_is_not_sent() -> None:
    outbox = Outbox()
    outbox.add(result("a"))
    outbox.ack([RunKey("a", 1)])
    assert outbox.take_unsent() == []


async def test_wait_empty_returns_once_everything_is_acked() -> None:
    outbox = Outbox()
    await asyncio.wait_for(outbox.wait_empty(), 1)
    outbox.add(result("a"))
    waiter = asyncio.create_task(outbox.wait_empty())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    outbox.ack([RunKey("a", 1)])
    await asyncio.wait_for(waiter, 5)
