"""Resident memory of daemons, read from ``/proc`` (Linux only, like the embedded PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

KIB = 1024
MIB = 1024 * 1024


def rss_bytes(pid: int) -> int | None:
    """The resident set size of process ``pid``; None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * KIB
    return None


def rss_mib(pids: Mapping[str, int]) -> dict[str, float]:
    """Each named process's resident memory in MiB, rounded to 0.1 (gone ones left out)."""
    sizes = {name: rss_bytes(pid) for name, pid in pids.items()}
    return {name: round(size / MIB, 1) for name, size in sizes.items() if size is not None}


class PeakSampler:
    """The highest resident memory each process reached while sampling ran."""

    def __init__(self, pids: Mapping[str, int], interval: float = 0.5) -> None:
        """Sample ``pids`` every ``interval`` seconds."""
        self._pids = dict(pids)
        self._interval = interval
        self.peaks: dict[str, float] = {}

    def sample(self) -> None:
        """Take one sample now."""
        for name, size in rss_mib(self._pids).items():
            self.peaks[name] = max(size, self.peaks.get(name, 0.0))

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[PeakSampler]:
        """Sample in the background for the duration of the block (and once at each end)."""

        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(self._interval)

        task = asyncio.create_task(loop(), name="rss-sampler")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sample()
