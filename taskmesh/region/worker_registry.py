"""The workers connected to a region, the runs each holds, and where the next run goes."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from taskmesh.common.model import Executor, WorkerState
from taskmesh.common.rpc import region_pb2
from taskmesh.region.breakers import BreakerBoard
from taskmesh.region.holdings import HeldRun

GIVEN_UP_MEMORY = 10_000  # runs taken back from workers, remembered to fence their late reports


@dataclass(eq=False)
class ConnectedWorker:
    """One worker on its current stream: what it registered, its credit, the runs it holds."""

    id: str
    slots: int
    labels: Mapping[str, str]
    executors: frozenset[Executor]
    version: str
    connected_at: datetime
    heartbeat_at: datetime  # wall clock of the last heartbeat, for status
    seen_at: float  # monotonic time of the last message, for the heartbeat timeout
    free_slots: int  # as last advertised, minus assignments since
    held: dict[UUID, HeldRun] = field(default_factory=dict)
    draining: bool = False
    outbox_size: int = 0
    closed: bool = False
    _outgoing: asyncio.Queue[region_pb2.RegionMessage | None] = field(default_factory=asyncio.Queue)

    @property
    def credit(self) -> int:
        """How many more runs it may be given now: never past its advertised free slots."""
        if self.draining or self.closed:
            return 0
        return max(0, min(self.slots - len(self.held), self.free_slots))

    @property
    def load(self) -> float:
        """The share of its slots in use by runs the region gave it."""
        return len(self.held) / self.slots

    def supports(self, executor: Executor) -> bool:
        """True when it runs commands with ``executor``."""
        return executor in self.executors

    def send(self, message: region_pb2.RegionMessage) -> None:
        """Queue a message for its stream (dropped once the stream is closed)."""
        if not self.closed:
            self._outgoing.put_nowait(message)

    def close(self) -> None:
        """End its stream once the messages queued so far are written."""
        if not self.closed:
            self.closed = True
            self._outgoing.put_nowait(None)

    async def next_message(self) -> region_pb2.RegionMessage | None:
        """The next message to write, or None when the stream is to end."""
        return await self._outgoing.get()


class WorkerRegistry:
    """Connected workers by id, and every run they hold by run id."""

    def __init__(self, board: BreakerBoard) -> None:
        self._board = board
        self._workers: dict[str, ConnectedWorker] = {}
        self._holders: dict[UUID, HeldRun] = {}
        self._given_up: OrderedDict[UUID, tuple[str, int]] = OrderedDict()
        self._cursor = 0
        self._empty = asyncio.Event()  # set while no worker is connected
        self._empty.set()
        self._changes: dict[str, WorkerState | None] = {}  # for the ledger's worker rows

    def __iter__(self) -> Iterator[ConnectedWorker]:
        return iter(list(self._workers.values()))

    def __len__(self) -> int:
        return len(self._workers)

    def get(self, worker_id: str) -> ConnectedWorker | None:
        """The connected worker with this id."""
        return self._workers.get(worker_id)

    def add(self, worker: ConnectedWorker) -> None:
        """Track a newly registered worker (its id must not be connected)."""
        if worker.id in self._workers:
            raise ValueError(f"worker {worker.id} is already connected")
        self._workers[worker.id] = worker
        self._changes[worker.id] = WorkerState.UP
        self._empty.clear()

    def mark_draining(self, worker: ConnectedWorker) -> None:
        """Note that a worker takes no more runs (it announced a drain)."""
        worker.draining = True
        if self._workers.get(worker.id) is worker:
            self._changes[worker.id] = WorkerState.DRAINING

    def discard(self, worker: ConnectedWorker) -> bool:
        """Stop tracking this stream of a worker; False if it was already replaced or gone."""
        if self._workers.get(worker.id) is not worker:
            return False
        del self._workers[worker.id]
        self._changes[worker.id] = None
        if not self._workers:
            self._empty.set()
        return True

    def membership_changes(self) -> dict[str, WorkerState | None]:
        """Workers whose ledger row must change: new state, or None to remove the row."""
        return dict(self._changes)

    def membership_written(self, changes: Mapping[str, WorkerState | None]) -> None:
        """Forget changes now in the ledger, unless they changed again meanwhile."""
        for worker_id, state in changes.items():
            if self._changes.get(worker_id, state) == state:
                self._changes.pop(worker_id, None)

    @property
    def running(self) -> int:
        """Runs held by workers (assigned or running)."""
        return len(self._holders)

    def holder(self, run_id: UUID) -> HeldRun | None:
        """The hold on a run, if a worker has it."""
        return self._holders.get(run_id)

    def hold(self, worker: ConnectedWorker, held: HeldRun) -> None:
        """Give a run to a worker."""
        worker.held[held.run_id] = held
        self._holders[held.run_id] = held
        self._given_up.pop(held.run_id, None)

    def release(self, run_id: UUID) -> HeldRun | None:
        """Take a run off its worker (its result came, or it was taken back)."""
        held = self._holders.pop(run_id, None)
        if held is None:
            return None
        worker = self._workers.get(held.worker_id)
        if worker is not None and worker.held.get(run_id) is held:
            del worker.held[run_id]
        return held

    def give_up(self, held: HeldRun) -> None:
        """Remember that ``held`` was taken back, so later reports of it are not recorded."""
        self._given_up[held.run_id] = (held.worker_id, held.epoch)
        self._given_up.move_to_end(held.run_id)
        while len(self._given_up) > GIVEN_UP_MEMORY:
            self._given_up.popitem(last=False)

    def gave_up(self, worker_id: str, run_id: UUID, epoch: int) -> bool:
        """True when the region took this run back from this worker under this epoch."""
        return self._given_up.get(run_id) == (worker_id, epoch)

    def has_credit(self) -> bool:
        """True when some worker could take a run now."""
        return any(self._available(worker) for worker in self._workers.values())

    def supports(self, executor: Executor) -> bool:
        """True when no worker is connected (they may come) or some supports ``executor``."""
        workers = self._workers.values()
        return not workers or any(worker.supports(executor) for worker in workers)

    def pick(self, executor: Executor) -> ConnectedWorker | None:
        """The least loaded worker that can take a run with ``executor``; round robin on ties."""
        workers = list(self._workers.values())
        count = len(workers)
        candidates = [
            (worker.load, (index - self._cursor) % count, index)
            for index, worker in enumerate(workers)
            if self._available(worker) and worker.supports(executor)
        ]
        if not candidates:
            return None
        _, _, index = min(candidates)
        self._cursor = index + 1
        return workers[index]

    async def wait_empty(self) -> None:
        """Return once no worker is connected."""
        await self._empty.wait()

    def _available(self, worker: ConnectedWorker) -> bool:
        """True when ``worker`` has credit and its breaker lets a run through."""
        return worker.credit > 0 and self._board.worker(worker.id).allows()
