"""Giving the C heap's free memory back to the system after large delegations.

A ``Delegate`` of thousands of runs is parsed into C memory (protobuf) and Python objects that
are freed once it is answered, but glibc keeps the freed pages, interleaved with the queued
runs that stay: a region that received 100,000 runs in large batches held ~15 MiB more than
the runs themselves. ``malloc_trim`` returns those pages. It runs a moment after the call (so
the request itself is freed by then), at most once per delay, and only where glibc is.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TRIM_DELAY = 1.0  # seconds after a large delegation
LARGE_DELEGATION = 1000  # runs


def glibc_trim() -> Callable[[], None] | None:
    """``malloc_trim(0)`` of the C library, or None where it has none (not glibc)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def release() -> None:
        trim(0)

    return release


class HeapTrimmer:
    """Trims the C heap once, a moment after the last large delegation asked for it."""

    def __init__(self, trim: Callable[[], None] | None = None, delay: float = TRIM_DELAY) -> None:
        """``trim`` defaults to glibc's; without one, asking does nothing."""
        self._trim = trim if trim is not None else glibc_trim()
        self._delay = delay
        self._pending: asyncio.TimerHandle | None = None
        self.trims = 0

    def delegated(self, runs: int) -> None:
        """A delegation of ``runs`` was handled: trim soon if it was large."""
        if runs < LARGE_DELEGATION or self._trim is None or self._pending is not None:
            return
        self._pending = asyncio.get_running_loop().call_later(self._delay, self._run)

    def _run(self) -> None:
        self._pending = None
        assert self._trim is not None
        self._trim()
        self.trims += 1
