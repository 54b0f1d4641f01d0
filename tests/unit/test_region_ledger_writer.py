"""The batched ledger writer against an in-memory transition store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from uuid import UUID, uuid4

import pytest

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.model import RunState, Transition, TransitionOutcome
from taskmesh.region.ledger_writer import LedgerWriter

NOW = datetime(2026, 3, 1, tzinfo=UTC)


class MemoryStore:
    """Records each batch; can be held, made unavailable, or poisoned by an error text."""

    def __init__(self) -> None:
        self.batches: list[list[Transition]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.outages = 0
        self.calls = 0
        self.held: set[UUID] = set()  # batches about these runs wait for ``release``
        self.release = asyncio.Event()

    async def record_transitions(
        self, items: Sequence[Transition], *, lost_retry_limit: int
    ) -> list[TransitionOutcome]:
        self.calls += 1
        await self.gate.wait()
        if any(item.run_id in self.held for item in items):
            await self.release.wait()
        if self.outages:
            self.outages -= 1
            raise LedgerUnavailableError("down")
        if any(item.error == "poison" for item in items):
            raise ValueError("the ledger cannot store this")
        self.batches.append(list(items))
        return [TransitionOutcome(item, current_state=item.target) for item in items]


def transition(error: str | None = None, run_id: UUID | None = None) -> Transition:
    return Transition(run_id or uuid4(), 1, RunState.RUNNING, NOW, error=error)


def assigned(run_id: UUID | None = None) -> Transition:
    return Transition(run_id or uuid4(), 1, RunState.ASSIGNED, NOW)


@pytest.fixture
async def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
async def writer(store: MemoryStore) -> AsyncIterator[LedgerWriter]:
    writer = LedgerWriter(store, lost_retry_limit=3)
    task = asyncio.create_task(writer.run())
    yield writer
    writer.stop()
    await asyncio.wait_for(task, 5)


async def test_what_accumulates_during_a_write_goes_in_one_batch(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    store.gate.clear()
    writer.record([transition()])
    await asyncio.sleep(0.01)  # the first batch is in flight, held at the gate
    later = [transition() for _ in range(3)]
    for item in later:
        writer.record([item])
    assert writer.pending == 3
    store.gate.set()
    await writer.flush()
    assert [len(batch) for batch in store.batches] == [1, 3]
    assert store.batches[1] == later


async def test_callbacks_run_only_after_the_commit(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    store.gate.clear()
    heard: list[list[TransitionOutcome]] = []
    items = [transition(), transition()]
    writer.record(items, heard.append)
    await asyncio.sleep(0.05)
    assert heard == []
    store.gate.set()
    await writer.flush()
    assert [[o.transition for o in outcomes] for outcomes in heard] == [items]


async def test_an_outage_is_retried_without_dropping_anything(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    store.outages = 3
    heard: list[list[TransitionOutcome]] = []
    items = [transition() for _ in range(5)]
    for item in items:
        writer.record([item], heard.append)
    await asyncio.wait_for(writer.flush(), 5)
    assert store.calls >= 4
    assert [item for batch in store.batches for item in batch] == items
    assert len(heard) == 5
    assert writer.ledger_available


async def test_a_rejected_ticket_is_isolated_from_the_rest_of_its_batch(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    store.gate.clear()
    writer.record([transition()])
    await asyncio.sleep(0.01)
    good = transition()
    writer.record([good])
    poisoned = asyncio.ensure_future(writer.write([transition("poison")]))
    also_good = asyncio.ensure_future(writer.write([transition()]))
    await asyncio.sleep(0.01)
    store.gate.set()
    assert len(await also_good) == 1
    with pytest.raises(ValueError, match="cannot store"):
        await poisoned
    assert good in [item for batch in store.batches for item in batch]


async def test_stop_returns_once_everything_recorded_is_written(store: MemoryStore) -> None:
    writer = LedgerWriter(store, lost_retry_limit=3, max_batch=2)
    for _ in range(5):
        writer.record([transition()])
    writer.stop()
    await asyncio.wait_for(writer.run(), 5)
    assert [len(batch) for batch in store.batches] == [2, 2, 1]


async def test_an_assignment_does_not_wait_for_the_main_batch_in_flight(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    slow = transition()
    store.held.add(slow.run_id)
    writer.record([slow])
    await asyncio.sleep(0.01)  # the results batch is in flight, held
    heard: list[list[TransitionOutcome]] = []
    urgent = assigned()
    writer.record([urgent], heard.append, urgent=True)
    await asyncio.wait_for(_until(lambda: bool(heard)), 5)
    assert store.batches == [[urgent]]
    store.release.set()
    await writer.flush()
    assert store.batches == [[urgent], [slow]]


async def test_an_assignment_of_a_run_with_an_unwritten_transition_waits_for_it(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    """A run given back (``delegated``) and assigned again: the two are written in order."""
    blocker = transition()
    store.held.add(blocker.run_id)
    writer.record([blocker])
    await asyncio.sleep(0.01)
    run_id = uuid4()
    back = Transition(run_id, 1, RunState.DELEGATED, NOW)
    writer.record([back])
    writer.record([assigned(run_id)], urgent=True)
    await asyncio.sleep(0.05)
    assert store.batches == []  # the assignment did not overtake the give-back
    store.release.set()
    await writer.flush()
    order = [item.target for batch in store.batches for item in batch if item.run_id == run_id]
    assert order == [RunState.DELEGATED, RunState.ASSIGNED]


async def test_a_transition_after_an_unwritten_assignment_waits_for_it(
    store: MemoryStore, writer: LedgerWriter
) -> None:
    run_id = uuid4()
    store.held.add(run_id)
    writer.record([assigned(run_id)], urgent=True)
    await asyncio.sleep(0.01)  # the assignment is in flight, held
    writer.record([Transition(run_id, 1, RunState.DELEGATED, NOW)])
    other = transition()
    flushed = asyncio.ensure_future(writer.flush())
    writer.record([other])
    await asyncio.sleep(0.05)
    assert store.batches == []  # neither the give-back nor the flush went ahead
    assert not flushed.done()
    store.release.set()
    await asyncio.wait_for(flushed, 5)
    order = [item.target for batch in store.batches for item in batch if item.run_id == run_id]
    assert order == [RunState.ASSIGNED, RunState.DELEGATED]


async def _until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.005)
