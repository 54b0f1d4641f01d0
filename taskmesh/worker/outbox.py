"""Results waiting for the region's acknowledgement that they are in the ledger.

A result stays here from the moment its run ends until an ``ack`` names it. Each result is sent
once per stream (a stream is ordered and reliable); a new stream re-sends every unacked result.
Memory is bounded by slots times the time between acks; output tails are bounded by the executor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from taskmesh.worker.messages import Result, RunKey


class Outbox:
    """Unacknowledged results, oldest first, with which of them the current stream still lacks."""

    def __init__(self) -> None:
        self._results: dict[RunKey, Result] = {}
        self._unsent: dict[RunKey, None] = {}  # an ordered set
        self._empty = asyncio.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key: object) -> bool:
        return key in self._results

    @property
    def keys(self) -> tuple[RunKey, ...]:
        """The unacknowledged results' runs, oldest first."""
        return tuple(self._results)

    def add(self, result: Result) -> None:
        """Keep ``result`` until it is acked, and queue it for sending."""
        self._results[result.key] = result
        self._unsent[result.key] = None
        self._empty.clear()

    def take_unsent(self) -> list[Result]:
        """The results not yet sent on the current stream, oldest first; now counted as sent."""
        unsent = [self._results[key] for key in self._unsent]
        self._unsent.clear()
        return unsent

    def resend_all(self) -> None:
        """Queue every unacknowledged result again, for a new stream."""
        self._unsent = dict.fromkeys(self._results)

    def ack(self, keys: Iterable[RunKey]) -> list[RunKey]:
        """Forget the acknowledged results; returns the keys that were held."""
        dropped = [key for key in keys if self._results.pop(key, None) is not None]
        for key in dropped:
            self._unsent.pop(key, None)
        if not self._results:
            self._empty.set()
        return dropped

    async def wait_empty(self) -> None:
        """Return once every result has been acknowledged."""
        await self._empty.wait()
