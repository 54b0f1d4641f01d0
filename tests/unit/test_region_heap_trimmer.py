"""The region gives freed C heap back after large delegations: once, a moment later."""

from __future__ import annotations

import asyncio

from taskmesh.region.heap_trimmer import LARGE_DELEGATION, HeapTrimmer, glibc_trim


async def test_one_trim_follows_a_burst_of_large_delegations() -> None:
    calls: list[None] = []
    trimmer = HeapTrimmer(lambda: calls.append(None), delay=0.05)
    trimmer.delegated(LARGE_DELEGATION)
    trimmer.delegated(LARGE_DELEGATION * 3)
    assert calls == []  # not while the request may still be referenced
    await asyncio.sleep(0.3)
    assert len(calls) == trimmer.trims == 1
    trimmer.delegated(LARGE_DELEGATION)
    await asyncio.sleep(0.3)
    assert trimmer.trims == 2


async def test_small_delegations_do_not_trim() -> None:
    calls: list[None] = []
    trimmer = HeapTrimmer(lambda: calls.append(None), delay=0.01)
    trimmer.delegated(LARGE_DELEGATION - 1)
    await asyncio.sleep(0.1)
    assert calls == []


def test_glibc_trim_is_found_and_callable_here() -> None:
    trim = glibc_trim()  # Debian: glibc
    assert trim is not None
    trim()
