"""Kills the process groups of a worker's commands when the worker dies without stopping them.

Commands run in sessions of their own (so a timeout can kill the whole group), which also means
a SIGKILLed worker leaves them running, unowned. ``PR_SET_PDEATHSIG`` would reach only each
group's leader (not a shell's children) and needs code between fork and exec in a threaded
process; instead a small guard process, in a session of its own, reads "+PGID" / "-PGID" lines
from a pipe the worker holds. When the worker dies, for any reason, the kernel closes the pipe:
the guard reads end-of-file and SIGKILLs every group still listed. A clean stop lists none.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from typing import IO

logger = logging.getLogger(__name__)

GUARD_COMMAND = "from taskmesh.worker.orphan_guard import guard_main; guard_main()"


def guard_main(stream: IO[bytes] | None = None) -> None:
    """The guard process: track the listed groups until end-of-file, then kill those left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end may stop it
    groups: set[int] = set()
    for line in stream or sys.stdin.buffer:
        operation, pgid = line[:1], int(line[1:])
        if operation == b"+":
            groups.add(pgid)
        else:
            groups.discard(pgid)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class OrphanGuard:
    """The worker's side: starts the guard and tells it which process groups are live."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the guard process (in its own session, so signals to ours miss it)."""
        self._process = subprocess.Popen(
            [sys.executable, "-c", GUARD_COMMAND],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )

    def watch(self, pgid: int) -> None:
        """A command's process group exists: kill it if the worker dies."""
        self._send(f"+{pgid}\n")

    def forget(self, pgid: int) -> None:
        """A command's process group is gone (or killed by the worker itself)."""
        self._send(f"-{pgid}\n")

    def stop(self) -> None:
        """Close the pipe (every group is forgotten by now) and reap the guard."""
        process, self._process = self._process, None
        if process is None or process.stdin is None:
            return
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _send(self, line: str) -> None:
        """Write one line to the guard; a dead guard is logged, never fatal to a run."""
        process = self._process
        if process is None or process.stdin is None:
            return
        try:
            process.stdin.write(line.encode())
            process.stdin.flush()
        except OSError as error:
            logger.warning("the orphan guard is gone (%s): commands may outlive the worker", error)
