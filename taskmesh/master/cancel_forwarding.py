"""Forwarding cancels of in-flight runs to the regions that hold them (best effort)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from uuid import UUID

from taskmesh.common.model import Run
from taskmesh.common.rpc import region_pb2
from taskmesh.master.region_clients import CALL_FAILURES, RegionClients, failure_text

log = logging.getLogger(__name__)


def by_region(regions: RegionClients, runs: Sequence[Run]) -> dict[str, list[Run]]:
    """Runs grouped by the known region that holds them (others are skipped)."""
    names = {client.name for client in regions}
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs:
        if run.region in names:
            groups[run.region].append(run)
    return dict(groups)


async def forward_cancels(regions: RegionClients, runs: Sequence[Run], reason: str) -> list[UUID]:
    """Ask each region to drop or stop its runs; returns the runs it acted on."""
    groups = by_region(regions, runs)
    requests = [
        regions.get(name).cancel(
            [region_pb2.RunRef(run_id=str(run.id), epoch=run.epoch) for run in members], reason
        )
        for name, members in groups.items()
    ]
    answers = await asyncio.gather(*requests, return_exceptions=True)
    acted: list[UUID] = []
    for name, answer in zip(groups, answers, strict=True):
        if isinstance(answer, CALL_FAILURES):
            log.warning("region %s: cancel not forwarded: %s", name, failure_text(answer))
        elif isinstance(answer, BaseException):
            raise answer
        else:
            ids = [*answer.dequeued_run_ids, *answer.signalled_run_ids]
            acted.extend(UUID(run_id) for run_id in ids)
    return acted
