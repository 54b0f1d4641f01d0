"""Declares workers dead when they stay silent past ``worker_heartbeat_timeout``.

A stream can stay open while its worker is frozen (SIGSTOP, a hung host): only the silence
tells. Every message a worker sends counts as a sign of life.
"""

from __future__ import annotations

import asyncio
import contextlib

from taskmesh.region.runtime import RegionRuntime
from taskmesh.region.worker_sessions import WorkerSessions

CHECKS_PER_TIMEOUT = 4  # a silent worker is noticed within 1¼ timeouts


class WorkerWatchdog:
    """Disconnects silent workers, taking their runs back."""

    def __init__(self, runtime: RegionRuntime, sessions: WorkerSessions) -> None:
        self._runtime = runtime
        self._sessions = sessions
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stopping.set()

    async def run(self) -> None:
        """Check every fraction of the timeout until stopped."""
        period = self._runtime.config.worker_heartbeat_timeout.total_seconds() / CHECKS_PER_TIMEOUT
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), period)
            self.check()

    def check(self) -> None:
        """Disconnect every worker silent for longer than the timeout."""
        timeout = self._runtime.config.worker_heartbeat_timeout.total_seconds()
        cutoff = self._runtime.clock() - timeout
        for worker in self._runtime.registry:
            if worker.seen_at < cutoff:
                reason = f"went silent for more than {timeout:g} s"
                self._sessions.disconnect(worker, reason, failure=True)
