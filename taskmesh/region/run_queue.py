"""The region's priority queue of delegated runs, with aging.

Effective priority grows with waiting time: ``effective = priority + waited / age_step``. Ordering
by ``enqueued_at - priority * age_step`` is the same order at every instant, so aging needs no
re-sorting: a heap on that key is enough. Runs are kept in one heap per task kind so that a kind
whose breaker is open is skipped in O(kinds), not by popping and pushing back its runs.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueFullError(Exception):
    """The queue is at capacity; the caller refuses the run (it stays in the ledger)."""


@dataclass(order=True, slots=True)
class _Entry(Generic[T]):
    key: float
    sequence: int
    run_id: str = field(compare=False)
    kind: str = field(compare=False)
    priority: int = field(compare=False)
    enqueued_at: float = field(compare=False)
    payload: T = field(compare=False)
    removed: bool = field(default=False, compare=False)


class RunQueue(Generic[T]):
    """Bounded priority queue of runs: highest effective priority first, then oldest."""

    def __init__(self, capacity: int, age_step: timedelta, clock: Callable[[], float]) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if age_step <= timedelta(0):
            raise ValueError("age_step must be positive")
        self.capacity = capacity
        self._age_step = age_step.total_seconds()
        self._clock = clock
        self._heaps: dict[str, list[_Entry[T]]] = {}
        self._entries: dict[str, _Entry[T]] = {}
        self._sequence = itertools.count()
        self._garbage = 0  # removed entries still sitting in a heap

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, run_id: object) -> bool:
        return run_id in self._entries

    @property
    def credit(self) -> int:
        """Free room, advertised upstream so nobody pushes past it (0 when over capacity)."""
        return max(0, self.capacity - len(self._entries))

    def push(
        self, run_id: str, kind: str, priority: int, payload: T, enqueued_at: float | None = None
    ) -> None:
        """Enqueue a run (arrived now, or at ``enqueued_at`` on the queue's clock); raises
        ``QueueFullError`` at capacity, ``ValueError`` if present."""
        if run_id in self._entries:
            raise ValueError(f"run {run_id} is already queued")
        if self.credit <= 0:
            raise QueueFullError(f"queue is full ({self.capacity} runs)")
        at = self._clock() if enqueued_at is None else enqueued_at
        self._insert(run_id, kind, priority, at, payload)

    def restore(
        self, run_id: str, kind: str, priority: int, payload: T, enqueued_at: float
    ) -> None:
        """Put a run back with its original enqueue time, even past capacity.

        For runs that left the queue and return (a worker died before starting them): they
        were accepted once, so refusing them now would lose them; the excess only delays new
        delegations, since credit stays 0 until the queue is back under capacity.
        """
        if run_id in self._entries:
            raise ValueError(f"run {run_id} is already queued")
        self._insert(run_id, kind, priority, enqueued_at, payload)

    def get(self, run_id: str) -> T | None:
        """A queued run's payload, or None; the run stays queued."""
        entry = self._entries.get(run_id)
        return None if entry is None else entry.payload

    def pop(self, kind_allowed: Callable[[str], bool] = lambda _kind: True) -> T | None:
        """Remove and return the best run whose kind is allowed, or None."""
        best: list[_Entry[T]] | None = None
        for kind, heap in self._heaps.items():
            top = self._top(heap)
            if top is None or not kind_allowed(kind):
                continue
            if best is None or top < best[0]:
                best = heap
        if best is None:
            return None
        entry = heapq.heappop(best)
        del self._entries[entry.run_id]
        return entry.payload

    def remove(self, run_id: str) -> T | None:
        """Take a run out (cancelled, handed back); returns its payload or None if absent."""
        entry = self._entries.pop(run_id, None)
        if entry is None:
            return None
        self._discard(entry)
        return entry.payload

    def reprioritise(self, run_id: str, priority: int) -> bool:
        """Change a queued run's priority, keeping the time it has already waited."""
        entry = self._entries.get(run_id)
        if entry is None:
            return False
        del self._entries[run_id]
        self._discard(entry)
        self._insert(run_id, entry.kind, priority, entry.enqueued_at, entry.payload)
        return True

    def effective_priority(self, run_id: str) -> float | None:
        """A queued run's priority plus its aging bonus right now."""
        entry = self._entries.get(run_id)
        if entry is None:
            return None
        return entry.priority + (self._clock() - entry.enqueued_at) / self._age_step

    def depth_by_priority(self) -> dict[int, int]:
        """Number of queued runs per (base) priority."""
        depth: dict[int, int] = {}
        for entry in self._entries.values():
            depth[entry.priority] = depth.get(entry.priority, 0) + 1
        return depth

    def depth_by_kind(self) -> dict[str, int]:
        """How many runs of each kind are waiting."""
        return dict(Counter(entry.kind for entry in self._entries.values()))

    def drain(self) -> Iterator[T]:
        """Remove and yield every queued run, best first (for hand-back on shutdown)."""
        while (payload := self.pop()) is not None:
            yield payload

    def _insert(
        self, run_id: str, kind: str, priority: int, enqueued_at: float, payload: T
    ) -> None:
        key = enqueued_at - priority * self._age_step
        entry = _Entry(key, next(self._sequence), run_id, kind, priority, enqueued_at, payload)
        self._entries[run_id] = entry
        heapq.heappush(self._heaps.setdefault(kind, []), entry)

    def _discard(self, entry: _Entry[T]) -> None:
        """Mark an entry dead; rebuild the heaps once the dead outnumber the living."""
        entry.removed = True
        self._garbage += 1
        if self._garbage > max(1024, len(self._entries)):
            self._compact()

    def _compact(self) -> None:
        heaps: dict[str, list[_Entry[T]]] = {}
        for entry in self._entries.values():
            heaps.setdefault(entry.kind, []).append(entry)
        for heap in heaps.values():
            heapq.heapify(heap)
        self._heaps = heaps
        self._garbage = 0

    def _top(self, heap: list[_Entry[T]]) -> _Entry[T] | None:
        """The heap's best live entry, discarding removed ones lazily."""
        while heap and heap[0].removed:
            heapq.heappop(heap)
            self._garbage -= 1
        return heap[0] if heap else None
