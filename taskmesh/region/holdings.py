"""What the region holds of a run: queued (waiting for a worker) or held by a worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from taskmesh.common.model import ClaimedRun, RunState, Transition


@dataclass(slots=True)
class QueuedRun:
    """A delegated run in the queue: the claim, its current priority and when it arrived."""

    claimed: ClaimedRun
    priority: int
    enqueued_at: float  # on the queue's clock; kept when the run returns from a worker
    bounces: int = 0  # times a worker gave it back without starting it

    @property
    def key(self) -> str:
        """The run's key in the queue."""
        return str(self.claimed.run_id)

    @property
    def epoch(self) -> int:
        """The epoch it was delegated under."""
        return self.claimed.epoch


@dataclass(slots=True)
class HeldRun:
    """A run given to a worker: assigned until it starts, running until its result."""

    run_id: UUID
    epoch: int
    worker_id: str
    queued: QueuedRun | None  # None for a run adopted from a reconnecting worker
    started: bool = False

    @property
    def kind(self) -> str | None:
        """The task kind, when the region knows it (not for adopted runs)."""
        return None if self.queued is None else self.queued.claimed.kind

    def transition(self, target: RunState, at: datetime, error: str | None = None) -> Transition:
        """A transition of this run under the epoch it is held with."""
        return Transition(
            self.run_id, self.epoch, target, at, worker_id=self.worker_id, error=error
        )
