"""Two-stage stop on SIGTERM/SIGINT: the first signal drains a daemon, any later one forces it.

Only the daemons' entry points (``serve_master``, ``serve_region``, ``serve_worker``) enter
``two_stage_stop``: they own the process's signals, and hand the daemon below them plain stop
calls. The handlers are the event loop's, so the callbacks run in the loop, never inside an
interrupted frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

SignalCallback = Callable[[signal.Signals], None]


@contextlib.asynccontextmanager
async def two_stage_stop(drain: SignalCallback, force: SignalCallback) -> AsyncIterator[None]:
    """While inside, the first SIGTERM/SIGINT calls ``drain``, every later one ``force``.

    Each callback gets the signal received. The handlers are removed on the way out. Where the
    loop cannot handle signals (not the main thread, or a platform without them) the block
    runs without, and whoever started it stops it.
    """
    received = 0

    def on_signal(number: signal.Signals) -> None:
        """Count the signal; the first drains, the others force."""
        nonlocal received
        received += 1
        if received == 1:
            log.info("%s received: draining (send it again to stop at once)", number.name)
            drain(number)
        else:
            log.warning("%s received again: stopping at once", number.name)
            force(number)

    loop = asyncio.get_running_loop()
    installed = _install(loop, on_signal)
    try:
        yield
    finally:
        for number in installed:
            loop.remove_signal_handler(number)


def _install(loop: asyncio.AbstractEventLoop, on_signal: SignalCallback) -> list[signal.Signals]:
    """Route each of ``STOP_SIGNALS`` to ``on_signal``; the ones the loop accepted."""
    installed = []
    for number in STOP_SIGNALS:
        try:
            loop.add_signal_handler(number, on_signal, number)
        except (NotImplementedError, RuntimeError, ValueError) as error:
            log.warning(
                "cannot handle %s here (%s): stop the daemon another way", number.name, error
            )
        else:
            installed.append(number)
    return installed
