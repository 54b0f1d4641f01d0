"""A worker's side of the protocol with its region, without the process around it.

Slots, outbox, foreman and region link, wired together: assignments come in over the link,
run in slots, and their starts and results go back out. ``Worker`` wraps one engine with what
a process needs (probes, health service, orphan guard, drain on stop); ``taskmesh bench``
runs hundreds of engines in one process as lightweight simulated workers on real streams.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from taskmesh.common.retry_policies import Backoff
from taskmesh.worker.foreman import DrainRequest, Foreman
from taskmesh.worker.messages import Assignment, Result
from taskmesh.worker.orphan_guard import OrphanGuard
from taskmesh.worker.outbox import Outbox
from taskmesh.worker.region_link import RegionLink
from taskmesh.worker.settings import WorkerSettings
from taskmesh.worker.slots import SlotPool


class WorkerEngine:
    """Executes a region's assignments in slots and reports their starts and results."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        drain: DrainRequest,
        finished: Callable[[Result], None] = lambda _result: None,
        guard: OrphanGuard | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        """``drain`` is called when the region asks to drain, ``finished`` per result."""
        self._finished_listener = finished
        self.outbox = Outbox()
        self.slots = SlotPool(
            settings.slots,
            on_start=self._started,
            on_finish=self._finished,
            output_limit=settings.output_limit,
            guard=guard,
            env=settings.command_env,
            run_as=settings.run_as,
        )
        self.foreman = Foreman(
            settings, self.slots, self.outbox, wake=self._results_ready, drain=drain
        )
        self.link = RegionLink(
            settings.region_address,
            self.foreman,
            self.outbox,
            heartbeat_interval=settings.heartbeat_interval,
            backoff=backoff,
            tls=settings.tls,
        )

    def _started(self, assignment: Assignment, at: datetime) -> None:
        """A slot started a run's process: tell the region."""
        self.link.report_started(assignment.key, at)

    def _finished(self, assignment: Assignment, result: Result | None) -> None:
        """A slot finished a run: keep its result for the region."""
        if result is not None:
            self._finished_listener(result)
        self.foreman.record(result)

    def _results_ready(self) -> None:
        """New results are in the outbox: have the link write them."""
        self.link.wake()
