"""The one writer of the region's run transitions: batches them, retries, then reports back.

Callers hand in tickets (a few transitions and what to do once they are written). The writer
writes whatever accumulated while the previous batch was in flight as one
``record_transitions`` call, so a lone result is written at once and a burst is written in
few statements. ``LedgerUnavailableError`` is retried until the ledger is back: nothing is
dropped, and a ticket's callback (e.g. acking results to a worker) runs only after its
transitions are committed or refused for good.

Assignments are urgent: a worker starts a run only once its ``assigned`` is committed, and its
slot stays taken meanwhile. So they have a lane of their own, written concurrently with the
main lane's batch of results, instead of waiting for it. Order per run is kept: an urgent
ticket about a run with a transition still unwritten in the main lane joins the main lane, and
a main-lane batch about a run with an urgent transition still unwritten waits for that write;
``write`` and ``flush`` wait for every urgent ticket recorded before them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter, deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.model import Transition, TransitionOutcome, TransitionRefusal
from taskmesh.common.retry_policies import ledger_retrying

log = logging.getLogger(__name__)

MAX_BATCH = 1000  # transitions per statement; a ticket is never split
OnWritten = Callable[[list[TransitionOutcome]], None]


class TransitionStore(Protocol):
    """The part of the ledger the writer needs."""

    async def record_transitions(
        self, items: Sequence[Transition], *, lost_retry_limit: int
    ) -> list[TransitionOutcome]:
        """Apply a batch of guarded transitions; one outcome per item."""
        ...


class WriteObserver(Protocol):
    """Who measures the writes (the region's metrics)."""

    def timing_write(self, size: int) -> AbstractContextManager[None]:
        """Time one write of ``size`` transitions."""
        ...


@dataclass(slots=True)
class _Ticket:
    """Transitions written together, and who hears about their outcomes."""

    transitions: list[Transition]
    on_written: OnWritten | None = None
    future: asyncio.Future[list[TransitionOutcome]] | None = None
    number: int = 0  # the order tickets were recorded in, across both lanes
    waits_for: int = 0  # urgent tickets numbered below this are written before this one

    @property
    def run_ids(self) -> set[UUID]:
        """The runs this ticket's transitions are about."""
        return {item.run_id for item in self.transitions}


class _Lane:
    """Tickets waiting to be written one batch at a time, and the runs they are about."""

    def __init__(self) -> None:
        self.tickets: deque[_Ticket] = deque()
        self.unwritten: deque[int] = deque()  # numbers of tickets queued or in flight, in order
        self.runs: Counter[UUID] = Counter()  # unwritten transitions per run
        self.arrived = asyncio.Event()  # a ticket was queued
        self.written = asyncio.Event()  # a batch was written

    def add(self, ticket: _Ticket) -> None:
        """Queue a ticket and wake the lane."""
        self.tickets.append(ticket)
        self.unwritten.append(ticket.number)
        self.runs.update(item.run_id for item in ticket.transitions)
        self.arrived.set()

    def holds_any(self, run_ids: set[UUID]) -> bool:
        """True when any of these runs has a transition unwritten in this lane."""
        return any(self.runs[run_id] for run_id in run_ids)

    def written_before(self, number: int) -> bool:
        """True when every ticket numbered below ``number`` is written."""
        return not self.unwritten or self.unwritten[0] >= number

    def done(self, tickets: list[_Ticket]) -> None:
        """Forget written tickets (written in order, so from the front)."""
        for ticket in tickets:
            self.unwritten.remove(ticket.number)
            self.runs.subtract(item.run_id for item in ticket.transitions)
        self.runs = +self.runs  # drop the zero counts
        self.written.set()


class LedgerWriter:
    """Collects transitions from every part of the region and writes them in batches."""

    def __init__(
        self,
        store: TransitionStore,
        *,
        lost_retry_limit: int,
        max_batch: int = MAX_BATCH,
        observer: WriteObserver | None = None,
    ) -> None:
        self._store = store
        self._observer = observer
        self._lost_retry_limit = lost_retry_limit
        self._max_batch = max_batch
        self._main = _Lane()
        self._urgent = _Lane()
        self._numbers = itertools.count(1)
        self._stopping = False
        self.ledger_available = True  # False from a failed write until the next success
        self.stale_refusals = 0  # writes the ledger refused for a stale epoch (fenced off)

    @property
    def pending(self) -> int:
        """Transitions accepted and not yet written."""
        lanes = (self._main, self._urgent)
        return sum(len(ticket.transitions) for lane in lanes for ticket in lane.tickets)

    def record(
        self,
        transitions: Sequence[Transition],
        on_written: OnWritten | None = None,
        *,
        urgent: bool = False,
    ) -> None:
        """Write ``transitions`` soon; ``on_written`` gets their outcomes once committed.

        ``urgent`` ones (assignments) do not wait for the batch in flight in the main lane.
        """
        if transitions or on_written is not None:
            self._enqueue(_Ticket(list(transitions), on_written), urgent=urgent)

    async def write(self, transitions: Sequence[Transition]) -> list[TransitionOutcome]:
        """Write ``transitions`` (after everything recorded before) and return the outcomes."""
        future: asyncio.Future[list[TransitionOutcome]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Ticket(list(transitions), future=future), urgent=False)
        return await future

    async def flush(self) -> None:
        """Return once everything recorded so far is written."""
        await self.write([])

    def stop(self) -> None:
        """Ask ``run`` to return once everything recorded is written."""
        self._stopping = True
        for lane in (self._main, self._urgent):
            lane.arrived.set()

    async def run(self) -> None:
        """Write batches in both lanes until stopped and drained."""
        try:
            async with asyncio.TaskGroup() as lanes:
                lanes.create_task(self._drain(self._urgent), name="ledger-writer-urgent")
                lanes.create_task(self._drain(self._main), name="ledger-writer-main")
        finally:
            self._abandon()

    async def _drain(self, lane: _Lane) -> None:
        """Write one lane's batches until stopped and drained."""
        while lane.tickets or not self._stopping:
            if not lane.tickets:
                lane.arrived.clear()
                await lane.arrived.wait()
                continue
            batch = self._take_batch(lane)
            if lane is self._main:
                await self._after_urgent(max(ticket.waits_for for ticket in batch))
            try:
                await self._write_batch(batch)
            finally:
                lane.done(batch)

    async def _after_urgent(self, number: int) -> None:
        """Wait until the urgent tickets numbered below ``number`` are written."""
        urgent = self._urgent
        while not urgent.written_before(number):
            urgent.written.clear()
            await urgent.written.wait()

    def _enqueue(self, ticket: _Ticket, *, urgent: bool) -> None:
        """Number a ticket and queue it in the lane that keeps each run's order."""
        ticket.number = next(self._numbers)
        run_ids = ticket.run_ids
        if urgent and not self._main.holds_any(run_ids):
            self._urgent.add(ticket)
            return
        if ticket.future is not None or self._urgent.holds_any(run_ids):
            ticket.waits_for = ticket.number
        self._main.add(ticket)

    def _take_batch(self, lane: _Lane) -> list[_Ticket]:
        """The lane's oldest tickets, up to ``max_batch`` transitions (at least one ticket)."""
        tickets = lane.tickets
        batch = [tickets.popleft()]
        size = len(batch[0].transitions)
        while tickets and size + len(tickets[0].transitions) <= self._max_batch:
            size += len(tickets[0].transitions)
            batch.append(tickets.popleft())
        return batch

    async def _write_batch(self, tickets: list[_Ticket]) -> None:
        """Write the tickets' transitions in one statement; isolate a ticket the ledger rejects."""
        transitions = [item for ticket in tickets for item in ticket.transitions]
        try:
            outcomes = await self._write(transitions)
        except Exception as error:  # not an outage: a bad item; write tickets one by one
            if len(tickets) == 1:
                self._fail(tickets[0], error)
                return
            for ticket in tickets:
                await self._write_batch([ticket])
            return
        self._deliver(tickets, outcomes)

    async def _write(self, transitions: list[Transition]) -> list[TransitionOutcome]:
        """One ``record_transitions`` call, retried while the ledger is unavailable."""
        if not transitions:
            return []
        observer = self._observer
        with observer.timing_write(len(transitions)) if observer else nullcontext():
            async for attempt in ledger_retrying():
                with attempt:
                    try:
                        outcomes = await self._store.record_transitions(
                            transitions, lost_retry_limit=self._lost_retry_limit
                        )
                    except LedgerUnavailableError:
                        self.ledger_available = False
                        raise
        self.ledger_available = True
        return outcomes

    def _deliver(self, tickets: list[_Ticket], outcomes: list[TransitionOutcome]) -> None:
        """Count the fenced-off writes, then hand each ticket its slice of the outcomes."""
        self._count_stale(outcomes)
        start = 0
        for ticket in tickets:
            end = start + len(ticket.transitions)
            mine = outcomes[start:end]
            start = end
            if ticket.future is not None and not ticket.future.done():
                ticket.future.set_result(mine)
            if ticket.on_written is not None:
                try:
                    ticket.on_written(mine)
                except Exception:
                    log.exception("handling written transitions failed")

    def _count_stale(self, outcomes: list[TransitionOutcome]) -> None:
        """Count and log the writes refused because the run moved on to a newer epoch."""
        stale = [o for o in outcomes if o.refusal is TransitionRefusal.STALE_EPOCH]
        if not stale:
            return
        self.stale_refusals += len(stale)
        example = stale[0].transition
        log.warning(
            "the ledger refused %d writes with a stale epoch (e.g. %s of run %s at epoch %d, "
            "now %s); the region no longer owns those runs",
            len(stale),
            example.target,
            example.run_id,
            example.epoch,
            stale[0].current_epoch,
        )

    def _fail(self, ticket: _Ticket, error: Exception) -> None:
        """Report a ticket the ledger rejected for good (a bug or a malformed item)."""
        log.error(
            "the ledger rejected %d transitions, dropping them: %r", len(ticket.transitions), error
        )
        if ticket.future is not None and not ticket.future.done():
            ticket.future.set_exception(error)

    def _abandon(self) -> None:
        """On exit, fail whoever still waits for a write that will not happen."""
        left = [ticket for lane in (self._main, self._urgent) for ticket in lane.tickets]
        for ticket in left:
            if ticket.future is not None and not ticket.future.done():
                ticket.future.cancel()
        if left:
            log.warning("stopped with %d transitions unwritten", self.pending)
