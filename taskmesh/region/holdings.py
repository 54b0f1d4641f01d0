"""What the region holds of a run: queued (waiting for a worker) or held by a worker."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from taskmesh.common.model import ClaimedRun, RunState, Transition
from taskmesh.common.rpc import region_pb2
from taskmesh.common.rpc.runs import claimed_run_from_proto, claimed_run_to_proto


class QueuedRun:
    """A delegated run in the queue: its claim, current priority and when it arrived.

    A region may hold a hundred thousand of these, so one is compact: the claim is kept as
    its wire bytes (as the master sent it, less the run id, which is the key) and decoded when
    the run leaves the queue for a worker; the decoded claim is kept only until the run is
    queued again (``compact``).
    """

    __slots__ = ("_claimed", "_wire", "bounces", "enqueued_at", "epoch", "key", "kind", "priority")

    def __init__(
        self,
        claimed: ClaimedRun,
        priority: int,
        enqueued_at: float,
        bounces: int = 0,
        *,
        wire: region_pb2.ClaimedRun | None = None,
    ) -> None:
        """Queue ``claimed``; ``wire`` is its ClaimedRun message as received, if at hand."""
        self.key = str(claimed.run_id)  # the run's key in the queue
        self.epoch = claimed.epoch  # the epoch it was delegated under
        self.kind = sys.intern(claimed.kind)
        self.priority = priority
        self.enqueued_at = enqueued_at  # on the queue's clock; kept when it returns from a worker
        self.bounces = bounces  # times a worker gave it back without starting it
        message = wire if wire is not None else claimed_run_to_proto(claimed)
        self._wire = _without_run_id(message)
        self._claimed: ClaimedRun | None = None

    @property
    def run_id(self) -> UUID:
        """The run's id (without decoding the claim)."""
        return UUID(self.key)

    @property
    def claimed(self) -> ClaimedRun:
        """The claim, decoded from its wire bytes (kept until ``compact``)."""
        if self._claimed is None:
            message = region_pb2.ClaimedRun.FromString(self._wire)
            message.run_id = self.key
            self._claimed = claimed_run_from_proto(message)
        return self._claimed

    def compact(self) -> None:
        """Drop the decoded claim: the run is back in the queue."""
        self._claimed = None


def _without_run_id(message: region_pb2.ClaimedRun) -> bytes:
    """The message's wire bytes without its run id (36 of some 160 bytes)."""
    trimmed = region_pb2.ClaimedRun()
    trimmed.CopyFrom(message)
    trimmed.ClearField("run_id")
    return trimmed.SerializeToString()


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
