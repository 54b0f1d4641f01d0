"""A SIGKILLed worker leaves no command behind: its orphan guard kills their process groups.

The "worker" here is a small Python process that runs one command through the real executor
with a real ``OrphanGuard``, as the worker daemon does; the test SIGKILLs it mid-run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

WORKER = """
import asyncio, sys
from taskmesh.common.model import Executor
from taskmesh.worker.executor import Execution, execute
from taskmesh.worker.orphan_guard import OrphanGuard

async def main() -> None:
    guard = OrphanGuard()
    guard.start()
    await execute(Execution(Executor.SHELL, sys.argv[1]), guard=guard)

asyncio.run(main())
"""
# A worker that dies the moment it would tell its guard of a new command's group: the
# worst-timed SIGKILL. It leaves the group id behind for the test to watch.
DIES_BEFORE_GUARD_KNOWS = """
import asyncio, os, signal, sys
from pathlib import Path
from taskmesh.common.model import Executor
from taskmesh.worker.executor import Execution, execute

class DyingGuard:
    def watch(self, pgid: int) -> None:
        Path(sys.argv[2]).write_text(str(pgid))
        os.kill(os.getpid(), signal.SIGKILL)

    def forget(self, pgid: int) -> None:
        pass

asyncio.run(execute(Execution(Executor.SHELL, sys.argv[1]), guard=DyingGuard()))
"""
WAIT = 30.0  # generous: catches hangs


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] != "Z"


def wait_until(condition, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_killed_workers_commands_are_killed_with_their_children(tmp_path: Path) -> None:
    """The shell and the background child it started both go when the worker is SIGKILLed."""
    pids = tmp_path / "pids"
    command = f"sleep 300 & echo $$ $! > {pids}; wait"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, command])
    try:
        assert wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2)
        shell, child = (int(pid) for pid in pids.read_text().split())
        assert alive(shell)
        assert alive(child)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        assert wait_until(lambda: not alive(shell) and not alive(child))
    finally:
        worker.kill()
        worker.wait()
        for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_command_that_ends_is_forgotten_by_the_guard(tmp_path: Path) -> None:
    """A normal run leaves nothing listed: the guard exits quietly with the worker."""
    marker = tmp_path / "done"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, f"touch {marker}"])
    assert worker.wait(WAIT) == 0
    assert marker.exists()


def test_a_command_never_runs_when_its_worker_dies_before_the_guard_knows(tmp_path: Path) -> None:
    """Spawned but not yet guarded: the command is held back and exits once the worker is gone."""
    marker, group = tmp_path / "ran", tmp_path / "pgid"
    worker = subprocess.Popen(
        [sys.executable, "-c", DIES_BEFORE_GUARD_KNOWS, f"touch {marker}", str(group)]
    )
    assert worker.wait(WAIT) == -signal.SIGKILL
    pgid = int(group.read_text())
    try:
        assert wait_until(lambda: not alive(pgid))
        assert not marker.exists()
    finally:
        if alive(pgid):
            os.killpg(pgid, signal.SIGKILL)
