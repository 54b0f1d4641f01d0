"""Ledger scale: the master's claim cost as the ledger grows to millions of rows of history.

Two scratch ledger databases beside the measured one (same server, migrated to head) get the
same fixed set of due runs: the *baseline* one holds the smallest size of finished history, the
*grown* one is grown size by size (see ``common.ledger.history_benchmarks``). At each size,
after ``VACUUM ANALYZE`` and a few unmeasured claims, the master's own claim (``Ledger.
claim_due_runs``: the dispatcher's statements and transaction) is timed ``repeats`` times on
each, alternating, with the same credits; the claimed runs go back to pending between claims,
untimed. Alternating makes the ratio fair on a shared machine whose load drifts over the
minutes that filling takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from taskmesh.bench.load import BenchmarkError
from taskmesh.bench.scenarios import percentile
from taskmesh.common.ledger.history_benchmarks import HistoryLedger, scratch_url
from taskmesh.common.ledger.ledger import Ledger

SCRATCH_DATABASE = "taskmesh_bench_ledger"
DUE_RUNS = 1000
# Per claim: 100 bound runs each for eu and us, and 100 region-less runs placed in ap.
CREDITS = {"eu": 100, "us": 100, "ap": 100}
WARM_UP_CLAIMS = 5
FILL_CHUNK = 250_000  # history rows per INSERT ... SELECT (one transaction each)

Progress = Callable[[str], None]


class ScratchLedger:
    """One scratch ledger: its filling side and the master's own ``Ledger`` on it."""

    def __init__(self, history: HistoryLedger, ledger: Ledger) -> None:
        """Use ``scratch_ledger``."""
        self.history = history
        self.ledger = ledger
        self.history_runs = 0

    async def grow(self, size: int, now: datetime) -> float:
        """Add finished runs up to ``size``; the seconds it took (vacuum included)."""
        started = time.perf_counter()
        if size > self.history_runs:
            await self.history.add_history(self.history_runs + 1, size, now, FILL_CHUNK)
            self.history_runs = size
        return time.perf_counter() - started

    async def claim(self) -> float:
        """One timed claim (the master's, committed), then its runs back to pending, untimed."""
        started = time.perf_counter()
        claimed = await self.ledger.claim_due_runs(CREDITS, datetime.now(UTC))
        seconds = time.perf_counter() - started
        expected = sum(CREDITS.values())
        if len(claimed) != expected:
            raise BenchmarkError(f"the claim took {len(claimed)} runs, expected {expected}")
        await self.history.return_claimed([run.run_id for run in claimed])
        return seconds


@contextlib.asynccontextmanager
async def scratch_ledger(url: str, name: str, now: datetime) -> AsyncIterator[ScratchLedger]:
    """A migrated scratch database ``name`` holding the due runs; dropped after the block."""
    history = await HistoryLedger.create(url, name)
    try:
        from taskmesh.common.ledger.migrations import upgrade  # noqa: PLC0415 - slow import

        await asyncio.to_thread(upgrade, scratch_url(url, name))
        await history.add_due_runs(DUE_RUNS, now)
        ledger = await Ledger.connect(
            scratch_url(url, name), pool_size=1, application_name="taskmesh-bench"
        )
        try:
            yield ScratchLedger(history, ledger)
        finally:
            await ledger.close()
    finally:
        await history.drop()


async def ledger_scale(
    url: str, sizes: Sequence[int], repeats: int, progress: Progress
) -> dict[str, Any]:
    """Per-claim milliseconds at each ledger size (rows of finished runs), smallest first."""
    ordered = sorted(set(sizes))
    now = datetime.now(UTC)
    async with (
        scratch_ledger(url, f"{SCRATCH_DATABASE}_baseline", now) as baseline,
        scratch_ledger(url, f"{SCRATCH_DATABASE}_grown", now) as grown,
    ):
        progress(f"ledger: baseline of {ordered[0]:,} finished runs")
        await baseline.grow(ordered[0], now)
        points = []
        for size in ordered:
            progress(f"ledger: growing the history to {size:,} finished runs")
            fill_seconds = await grown.grow(size, now)
            progress(f"ledger: timing {repeats} claims at {size:,}, alternating with baseline")
            point = await _measure(baseline, grown, repeats)
            rows, size_bytes = await grown.history.size()
            points.append(
                {
                    "history_runs": size,
                    "ledger_runs": rows,
                    "ledger_mib": round(size_bytes / 2**20, 1),
                    "fill_seconds": round(fill_seconds, 1),
                    **point,
                }
            )
    return {
        "claim_runs": sum(CREDITS.values()),
        "due_runs": DUE_RUNS,
        "repeats": repeats,
        "baseline_history_runs": ordered[0],
        "sizes": points,
        "largest_over_baseline": points[-1]["over_baseline"],
    }


async def _measure(baseline: ScratchLedger, grown: ScratchLedger, repeats: int) -> dict[str, Any]:
    """Claims on both ledgers, alternating; the grown one's figures and their ratio."""
    for _ in range(WARM_UP_CLAIMS):
        await baseline.claim()
        await grown.claim()
    base_seconds: list[float] = []
    seconds: list[float] = []
    for _ in range(repeats):
        base_seconds.append(await baseline.claim())
        seconds.append(await grown.claim())
    base_seconds.sort()
    seconds.sort()
    p50, base_p50 = percentile(seconds, 0.5), percentile(base_seconds, 0.5)
    return {
        "claim_ms_p50": round(p50 * 1000, 2),
        "claim_ms_p90": round(percentile(seconds, 0.9) * 1000, 2),
        "claim_ms_mean": round(sum(seconds) / len(seconds) * 1000, 2),
        "baseline_claim_ms_p50": round(base_p50 * 1000, 2),
        "over_baseline": round(p50 / base_p50, 3),
    }
