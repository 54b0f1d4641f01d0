"""The dispatcher: claims due runs within each region's credit and delegates them in batches.

A round learns each region's credit, claims at most that many due runs per region in one ledger
transaction, sends each region its runs as one Delegate call (all regions at once), and puts
back to pending, at once, every run a region refused or did not receive. Rounds follow each
other without pause while claims come back full, so a burst drains at the speed of the ledger;
otherwise the dispatcher sleeps until runs are due: at once on a NOTIFY about runs due now
(``wake``), at the earliest ready time it knows of (asked of the ledger after every round and
lowered by NOTIFYs about later runs, ``wake_at``), and at the latest after the dispatch
interval, which only matters for what no timer covers (a region's credit coming back).

Each region's delivery is a task of its own: a round waits for it ``ROUND_WAIT`` at most, and a
delivery still out then (a frozen region, retried up to its deadline) finishes by itself,
settling its runs, while the next rounds go on for the other regions and give the slow one
nothing more until it answered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from taskmesh.common.daemon_logging import run_fields
from taskmesh.common.errors import LedgerUnavailableError
from taskmesh.common.ledger import Leadership, Ledger
from taskmesh.common.model import ClaimedRun
from taskmesh.common.retry_policies import ledger_backoff, refusal_park
from taskmesh.common.topology import MasterConfig
from taskmesh.master.clock import Clock, utc_now
from taskmesh.master.metrics import MasterMetrics
from taskmesh.master.region_clients import (
    CALL_FAILURES,
    ROUND_WAIT,
    Refusal,
    RegionClients,
    failure_text,
)

log = logging.getLogger(__name__)

# Refusals that only say "not now": the region's credit already tells when to come back.
# A stale epoch is a race with another delegation, settled by the ledger's epoch guard.
PASSING_REFUSALS = frozenset(
    {"REFUSAL_REASON_NO_CREDIT", "REFUSAL_REASON_DRAINING", "REFUSAL_REASON_STALE_EPOCH"}
)
DISPATCH_DUTY = "dispatcher"  # the advisory lock only the dispatching master holds
STANDBY_RETRY = 1.0  # seconds between a standby master's tries to take the dispatch lock
# Past a ready time before claiming: timers may fire a hair early, and clocks tick unevenly.
READY_MARGIN = 0.001
MAX_TRACKED_REFUSALS = 10_000  # runs whose refusals in a row are remembered for the backoff

RunKey = tuple[UUID, int]  # (run id, epoch it was claimed under)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What became of one region's batch."""

    accepted: int = 0
    unaccepted: tuple[RunKey, ...] = ()  # to go straight back to pending
    refused: tuple[tuple[RunKey, Refusal], ...] = ()  # refused for good: to be parked

    @property
    def bounced(self) -> bool:
        """True when the region refused runs it will refuse again."""
        return bool(self.refused)

    @property
    def released(self) -> int:
        """Runs put back to pending or parked."""
        return len(self.unaccepted) + len(self.refused)


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """What one dispatch round did."""

    claimed: int = 0
    accepted: int = 0
    released: int = 0
    full: bool = False  # the claim used all credit offered: more runs may be due
    bounced: bool = False  # a region refused runs it will refuse again: do not hurry back
    batches: dict[str, int] = field(default_factory=dict)  # runs sent per region


class Dispatcher:
    """Moves due runs from the ledger to the regions, round after round."""

    def __init__(
        self,
        ledger: Ledger,
        regions: RegionClients,
        config: MasterConfig,
        *,
        clock: Clock = utc_now,
        metrics: MasterMetrics | None = None,
    ) -> None:
        """Dispatch from ``ledger`` to ``regions`` every ``config.dispatch_interval`` at least."""
        self._ledger = ledger
        self._metrics = metrics
        self._regions = regions
        self._clock = clock
        self._interval = config.dispatch_interval.total_seconds()
        self._backoff = ledger_backoff(config.dispatch_interval)
        self._wake = asyncio.Event()  # runs are due now (or stop): end the pause
        self._rearm = asyncio.Event()  # an earlier ready time is known: shorten the pause
        self._next_ready: datetime | None = None  # the earliest ready time known to come
        self._announced: datetime | None = None  # the earliest announced since the last look
        self._looked = False  # the last round learnt the next ready time with its claim
        self._seen_ready: datetime | None = None  # what it learnt
        self._stopping = asyncio.Event()
        self._unreleased: list[RunKey] = []
        self._refusals: dict[UUID, int] = {}  # refusals in a row per run, for its backoff
        self._deliveries: set[asyncio.Task[BatchResult]] = set()  # still out

    def wake(self) -> None:
        """Runs may have become due: start a round now."""
        self._wake.set()

    def wake_at(self, ready_at: datetime) -> None:
        """Runs become claimable at ``ready_at``: start a round then (now if it has passed)."""
        if ready_at <= self._clock():
            self.wake()
            return
        self._announced = _earliest(self._announced, ready_at)
        if self._next_ready is None or ready_at < self._next_ready:
            self._next_ready = ready_at
            self._rearm.set()

    @property
    def next_ready(self) -> datetime | None:
        """The earliest later ready time the dispatcher will wake for, if any."""
        return self._next_ready

    def stop(self) -> None:
        """Claim nothing more; ``run`` returns once the round in flight is finished."""
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Dispatch while holding the dispatch lock, standing by otherwise, until stopped.

        Only one master dispatches at a time: two would each trust a region's credit and send
        it up to twice as many runs as it has room for.
        """
        while not self._stopping.is_set():
            try:
                async with self._ledger.singleton(DISPATCH_DUTY) as leadership:
                    if leadership.held:
                        log.info("dispatcher: this master now dispatches")
                        await self._dispatch(leadership)
                        continue
            except LedgerUnavailableError as error:
                log.warning("dispatcher: the ledger is unavailable, backing off: %s", error)
                await self._pause(self._backoff.next_delay(), wakeable=False)
                continue
            await self._pause(max(self._interval, STANDBY_RETRY), wakeable=False)

    async def _dispatch(self, leadership: Leadership) -> None:
        """Rounds until stopped or the dispatch lock is lost; then the deliveries still out."""
        try:
            while not self._stopping.is_set() and not leadership.lost.is_set():
                pause, wakeable = await self._burst()
                await self._pause(pause, wakeable=wakeable)
        finally:
            await self.settle()

    async def settle(self) -> None:
        """Return once every delivery still out has finished and settled its runs."""
        while self._deliveries:
            await asyncio.wait(set(self._deliveries))

    async def _burst(self) -> tuple[float, bool]:
        """Rounds while claims come back full; then the pause, and whether a NOTIFY may end it."""
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                outcome = await self.dispatch_round()
            except LedgerUnavailableError as error:
                log.warning("dispatcher: the ledger is unavailable, backing off: %s", error)
                return self._backoff.next_delay(), False
            self._backoff.reset()
            if outcome.full and outcome.accepted:
                continue  # more may be due, and regions are taking them
            try:
                if self._looked:
                    self._next_ready = _earliest(self._seen_ready, self._announced)
                elif not self._wake.is_set():  # else a round follows at once: look after it
                    await self._look_ahead()
            except LedgerUnavailableError as error:
                log.warning("dispatcher: the ledger is unavailable, backing off: %s", error)
                return self._backoff.next_delay(), False
            # Runs refused for good come straight back: only the timer brings them round again.
            return self._interval, not outcome.bounced
        return 0.0, False

    async def _look_ahead(self) -> None:
        """Learn the next ready time from the ledger, keeping any announced meanwhile."""
        self._announced = None
        known = await self._ledger.next_ready_at(self._clock())
        self._next_ready = _earliest(known, self._announced)

    async def _pause(self, seconds: float, *, wakeable: bool) -> None:
        """Sleep ``seconds``, or until woken or the next ready time (if ``wakeable``) or stopped."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        event = self._wake if wakeable else self._stopping
        while not event.is_set():
            timeout = deadline - loop.time()
            if wakeable and self._next_ready is not None:
                until_ready = (self._next_ready - self._clock()).total_seconds() + READY_MARGIN
                timeout = min(timeout, until_ready)
            if timeout <= 0:
                return
            self._rearm.clear()
            await _first_set((event, self._rearm), timeout)

    async def dispatch_round(self) -> RoundOutcome:
        """One round: learn credits, claim, delegate each region's batch, release the rest."""
        self._looked = False
        await self._release_leftovers()
        credits = await self._regions.credits(self._interval)
        offered = sum(credits.values())
        if offered == 0:
            return RoundOutcome()
        self._announced = None
        claimed, self._seen_ready = await self._ledger.claim_due_runs_and_next_ready(
            credits, self._clock(), self._regions.fallbacks
        )
        self._looked = True
        if not claimed:
            return RoundOutcome()
        batches = by_region(claimed)
        deliveries = [self._start_delivery(name, runs) for name, runs in batches.items()]
        done, _ = await asyncio.wait(deliveries, timeout=ROUND_WAIT)
        results = [delivery.result() for delivery in deliveries if delivery in done]
        return RoundOutcome(
            claimed=len(claimed),
            accepted=sum(result.accepted for result in results),
            released=sum(result.released for result in results),
            full=len(claimed) >= offered,
            bounced=any(result.bounced for result in results),
            batches={name: len(runs) for name, runs in batches.items()},
        )

    def _start_delivery(self, region: str, runs: Sequence[ClaimedRun]) -> asyncio.Task[BatchResult]:
        """Deliver one region its batch in a task of its own, tracked until it is done."""
        delivery = asyncio.create_task(
            self._deliver_and_settle(region, runs), name=f"delegate-{region}"
        )
        self._deliveries.add(delivery)
        delivery.add_done_callback(self._delivered)
        return delivery

    def _delivered(self, delivery: asyncio.Task[BatchResult]) -> None:
        """Stop tracking a finished delivery; log a failure nobody else will see."""
        self._deliveries.discard(delivery)
        if not delivery.cancelled() and (error := delivery.exception()) is not None:
            log.error("dispatcher: a delivery failed: %r", error, exc_info=error)

    async def _deliver_and_settle(self, region: str, runs: Sequence[ClaimedRun]) -> BatchResult:
        """Deliver a batch, then release what the region did not take and park its refusals."""
        result = await self._deliver(region, runs)
        await self._release(result.unaccepted)
        await self._park([(region, item) for item in result.refused])
        return result

    async def _deliver(self, region: str, runs: Sequence[ClaimedRun]) -> BatchResult:
        """Send one region its batch; everything it did not take is to be released."""
        client = self._regions.get(region)
        if self._metrics is not None:
            self._metrics.observe_batch(region, len(runs))
        try:
            delivery = await client.delegate(runs)
        except CALL_FAILURES as error:
            log.warning(
                "region %s: %d runs not delivered, back to pending: %s",
                region,
                len(runs),
                failure_text(error),
            )
            return BatchResult(unaccepted=tuple((run.run_id, run.epoch) for run in runs))
        hard = {r.run_id: r for r in delivery.refused if r.reason not in PASSING_REFUSALS}
        unaccepted, refused = [], []
        for run in runs:
            if run.run_id in delivery.accepted:
                self._refusals.pop(run.run_id, None)
            elif str(run.run_id) in hard:
                refused.append(((run.run_id, run.epoch), hard[str(run.run_id)]))
            else:
                unaccepted.append((run.run_id, run.epoch))
        if self._metrics is not None:
            self._metrics.observe_delegated(
                region, [run for run in runs if run.run_id in delivery.accepted]
            )
        accepted = len(runs) - len(unaccepted) - len(refused)
        return BatchResult(accepted, tuple(unaccepted), tuple(refused))

    async def _park(self, refused: Sequence[tuple[str, tuple[RunKey, Refusal]]]) -> None:
        """Park runs refused for good, each for its backoff; one ledger call per backoff."""
        if len(self._refusals) > MAX_TRACKED_REFUSALS:
            self._refusals.clear()  # forget old backoffs rather than grow without bound
        now = self._clock()
        groups: dict[tuple[str, str, datetime], list[RunKey]] = defaultdict(list)
        details: dict[tuple[str, str, datetime], str] = {}
        for region, (key, refusal) in refused:
            count = self._refusals[key[0]] = self._refusals.get(key[0], 0) + 1
            until = now + refusal_park(count)
            log.warning(
                "region %s refused run %s for good (%s: %s): parked until %s",
                region,
                key[0],
                refusal.reason,
                refusal.detail,
                until.isoformat(),
                extra=run_fields(key[0], region=region),
            )
            group = (region, refusal.reason, until)
            groups[group].append(key)
            details.setdefault(group, refusal.detail)
        for (region, reason, until), keys in groups.items():
            detail = {
                "cause": "refused",
                "region": region,
                "reason": reason,
                "detail": details[(region, reason, until)],
                "parked_until": until.isoformat(),
            }
            try:
                await self._ledger.park_runs(keys, now, until, detail)
            except LedgerUnavailableError:
                self._unreleased.extend(keys)

    async def _release(self, keys: Sequence[RunKey]) -> None:
        """Put runs back to pending; kept for the next round if the ledger is down."""
        if not keys:
            return
        try:
            outcomes = await self._ledger.release_runs(keys, self._clock())
        except LedgerUnavailableError as error:
            log.warning(
                "dispatcher: %d runs stay delegated until the ledger is back: %s", len(keys), error
            )
            self._unreleased.extend(keys)
            return
        if self._metrics is not None:
            self._metrics.count_refusals(outcomes)
        for outcome in outcomes:
            if not outcome.applied:
                run_id = outcome.transition.run_id
                log.debug(
                    "run %s not released: %s", run_id, outcome.refusal, extra=run_fields(run_id)
                )

    async def _release_leftovers(self) -> None:
        """Release what an earlier round could not (raises while the ledger is down)."""
        if not self._unreleased:
            return
        keys, self._unreleased = self._unreleased, []
        try:
            await self._ledger.release_runs(keys, self._clock())
        except LedgerUnavailableError:
            self._unreleased = keys + self._unreleased
            raise


def _earliest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The earlier of two optional instants."""
    if first is None or second is None:
        return first or second
    return min(first, second)


async def _first_set(events: Sequence[asyncio.Event], seconds: float) -> None:
    """Return when any of ``events`` is set, or after ``seconds``."""
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def by_region(runs: Sequence[ClaimedRun]) -> dict[str, list[ClaimedRun]]:
    """Claimed runs grouped by the region they were claimed for, order kept."""
    groups: dict[str, list[ClaimedRun]] = defaultdict(list)
    for run in runs:
        groups[run.region].append(run)
    return dict(groups)
