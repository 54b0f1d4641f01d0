"""The one writer of the region's run transitions: batches them, retries, then reports back.

Callers hand in tickets (a few transitions and what to do once they are written). The writer
writes whatever accumulated while the previous batch was in flight as one
``record_transitions`` call, so a lone result is written at once and a burst is written in
few statements. ``LedgerUnavailableError`` is retried until the ledger is back: nothing is
dropped, and a ticket's callback (e.g. acking results to a worker) runs only after its
transitions are committed or refused for good.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

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
        self._tickets: deque[_Ticket] = deque()
        self._arrived = asyncio.Event()
        self._stopping = False
        self.ledger_available = True  # False from a failed write until the next success
        self.stale_refusals = 0  # writes the ledger refused for a stale epoch (fenced off)

    @property
    def pending(self) -> int:
        """Transitions accepted and not yet written."""
        return sum(len(ticket.transitions) for ticket in self._tickets)

    def record(
        self, transitions: Sequence[Transition], on_written: OnWritten | None = None
    ) -> None:
        """Write ``transitions`` soon; ``on_written`` gets their outcomes once committed."""
        if transitions or on_written is not None:
            self._enqueue(_Ticket(list(transitions), on_written))

    async def write(self, transitions: Sequence[Transition]) -> list[TransitionOutcome]:
        """Write ``transitions`` (after everything recorded before) and return the outcomes."""
        future: asyncio.Future[list[TransitionOutcome]] = asyncio.get_running_loop().create_future()
        self._enqueue(_Ticket(list(transitions), future=future))
        return await future

    async def flush(self) -> None:
        """Return once everything recorded so far is written."""
        await self.write([])

    def stop(self) -> None:
        """Ask ``run`` to return once everything recorded is written."""
        self._stopping = True
        self._arrived.set()

    async def run(self) -> None:
        """Write batches until stopped and drained."""
        try:
            while self._tickets or not self._stopping:
                if not self._tickets:
                    self._arrived.clear()
                    await self._arrived.wait()
                    continue
                await self._write_batch(self._take_batch())
        finally:
            self._abandon()

    def _enqueue(self, ticket: _Ticket) -> None:
        """Queue a ticket and wake the loop."""
        self._tickets.append(ticket)
        self._arrived.set()

    def _take_batch(self) -> list[_Ticket]:
        """The oldest tickets, up to ``max_batch`` transitions (at least one ticket)."""
        batch = [self._tickets.popleft()]
        size = len(batch[0].transitions)
        while self._tickets and size + len(self._tickets[0].transitions) <= self._max_batch:
            size += len(self._tickets[0].transitions)
            batch.append(self._tickets.popleft())
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
        for ticket in self._tickets:
            if ticket.future is not None and not ticket.future.done():
                ticket.future.cancel()
        if self._tickets:
            log.warning("stopped with %d transitions unwritten", self.pending)
