"""Runs one command in its own process group and reports how it ended.

Commands run under ``/bin/sh -c`` (``shell``) or as an argv without a shell (``exec``), each in a
new session so a timeout or a cancel can kill the whole process group, children included.
Output (stdout and stderr interleaved) is kept as a bounded tail: a chatty command never grows
the worker's memory, and a cut tail starts with a line saying how many bytes were dropped.
The environment is the execution's ``env`` when set (the pool's allow-list), else the worker's
own. ``run_as`` switches user and groups through util-linux's ``setpriv`` placed before the
command, not through ``subprocess``'s ``user=``/``group=``: those make Python ``fork()`` instead
of ``vfork()``, and a fork of a process with gRPC threads runs gRPC's fork handlers, which can
abort the child (observed: commands killed by SIGABRT).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from taskmesh.common.model import Executor, RunState
from taskmesh.common.topology.config import DEFAULT_OUTPUT_LIMIT

KILL_GRACE = timedelta(seconds=2)
_READ_CHUNK = 16 * 1024


@dataclass(frozen=True, slots=True)
class Execution:
    """What to run: one attempt's command, as the region assigned it."""

    executor: Executor
    command: str
    args: tuple[str, ...] = ()
    timeout: timedelta | None = None
    env: tuple[tuple[str, str], ...] | None = None  # None: the worker's own environment


@dataclass(frozen=True, slots=True)
class RunAs:
    """The user (and its primary group) a command runs as; no supplementary groups."""

    user: str
    uid: int
    gid: int
    setpriv: str = "/usr/bin/setpriv"

    def launcher(self) -> tuple[str, ...]:
        """The argv prefix that switches to this user before executing the command."""
        ids = (f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups")
        return (self.setpriv, *ids, "--")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one execution ended."""

    state: RunState
    started_at: datetime
    finished_at: datetime
    exit_code: int | None = None
    output_tail: str = ""
    error: str = ""


class GroupGuard(Protocol):
    """Who kills a command's process group should the worker die (``OrphanGuard``)."""

    def watch(self, pgid: int) -> None:
        """The group exists."""
        ...

    def forget(self, pgid: int) -> None:
        """The group is gone."""
        ...


class OutputTail:
    """Keeps the last ``limit`` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self.dropped = 0  # bytes that fell off the front

    @property
    def truncated(self) -> bool:
        """True once some output was dropped."""
        return self.dropped > 0

    def write(self, chunk: bytes) -> None:
        """Append ``chunk``, dropping the oldest bytes past the limit."""
        self._buffer += chunk
        overflow = len(self._buffer) - self._limit
        if overflow > 0:
            del self._buffer[:overflow]
            self.dropped += overflow

    def text(self) -> str:
        """The tail decoded as UTF-8 (a character cut at the front is replaced)."""
        return self._buffer.decode("utf-8", errors="replace")

    def report(self) -> str:
        """The tail, after a marker line when output was dropped."""
        if not self.truncated:
            return self.text()
        marker = (
            f"[taskmesh: output truncated, {self.dropped} earlier bytes dropped; "
            f"the worker keeps the last {self._limit} bytes]\n"
        )
        return marker + self.text()


async def execute(
    execution: Execution,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    *,
    on_start: Callable[[datetime], None] | None = None,
    guard: GroupGuard | None = None,
    run_as: RunAs | None = None,
) -> Outcome:
    """Run ``execution`` to its end, its timeout, or the caller's cancellation.

    ``on_start`` is called with the start time once the process exists (at once for ``noop``);
    it is not called when the command cannot be started. Cancellation kills the process group
    and re-raises ``CancelledError`` after the group is gone, so a cancelled run never leaves a
    process behind. ``guard`` is told of the group while it lives, to kill it should the
    worker itself die.
    """
    started_at = _now()
    started = _StartListener(on_start, started_at)
    if execution.executor is Executor.NOOP:
        started.notify()
        return Outcome(RunState.SUCCEEDED, started_at, _now(), exit_code=0)
    gate = None if guard is None else _Gate()
    try:
        try:
            process = await _start(execution, started, run_as, gate)
        except OSError as exc:
            error = f"cannot start command: {exc}"
            return Outcome(RunState.FAILED, started_at, _now(), error=error)
        if guard is not None and gate is not None:
            guard.watch(process.pid)
            gate.open()
    finally:
        if gate is not None:
            gate.close()
    try:
        return await _supervise(process, execution, output_limit, started_at)
    finally:
        if guard is not None:
            guard.forget(process.pid)


class _Gate:
    """Holds a spawned command back until its group is known to the guard.

    The command is started behind a tiny ``/bin/sh`` that first reads one line from a pipe on
    its stdin: the worker writes it only after telling the guard of the group. A worker that
    dies in between closes the pipe instead, and the command never runs (the shell exits 125),
    so no command can outlive its worker without the guard knowing of it.
    """

    SCRIPT = 'IFS= read -r _ || exit 125; exec </dev/null; exec "$@"'

    def __init__(self) -> None:
        self.read_end, self._write_end = os.pipe()

    def wrap(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        """``argv`` started behind the gate."""
        return ("/bin/sh", "-c", self.SCRIPT, "taskmesh-gate", *argv)

    def open(self) -> None:
        """Let the command run."""
        os.write(self._write_end, b"\n")
        self.close()

    def close(self) -> None:
        """Close both ends (the command, if not let through yet, then exits unexecuted)."""
        for fd in (self.read_end, self._write_end):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.read_end = self._write_end = -1


async def _supervise(
    process: asyncio.subprocess.Process,
    execution: Execution,
    output_limit: int,
    started_at: datetime,
) -> Outcome:
    """Collect the output of a started command until it ends, times out or is cancelled."""
    tail = OutputTail(output_limit)
    reader = asyncio.create_task(_drain(process, tail), name="executor-output")
    timeout = execution.timeout.total_seconds() if execution.timeout else None
    try:
        async with asyncio.timeout(timeout):
            await _leader_exit(process.pid)
            # The run ends with its leader: background children it left would hold the
            # output pipe open (and outlive the run), so the rest of the group goes too.
            _signal_group(process.pid, signal.SIGKILL)
            await reader
            exit_code = await process.wait()
    except TimeoutError:
        await _kill_group(process, reader)
        return Outcome(
            RunState.TIMED_OUT,
            started_at,
            _now(),
            output_tail=tail.report(),
            error=f"timed out after {execution.timeout}; process group killed",
        )
    except asyncio.CancelledError:
        await _kill_group(process, reader)
        raise
    return _finished(exit_code, started_at, tail)


def _finished(exit_code: int, started_at: datetime, tail: OutputTail) -> Outcome:
    """The outcome of a process that exited by itself."""
    if exit_code == 0:
        return Outcome(RunState.SUCCEEDED, started_at, _now(), 0, tail.report())
    error = f"exited with status {exit_code}"
    if exit_code < 0:
        error = f"killed by signal {signal.Signals(-exit_code).name}"
    return Outcome(RunState.FAILED, started_at, _now(), exit_code, tail.report(), error)


@dataclass(frozen=True, slots=True)
class _StartListener:
    """The caller's ``on_start``, told once a process exists."""

    on_start: Callable[[datetime], None] | None
    started_at: datetime

    def notify(self) -> None:
        """Tell the caller the process started."""
        if self.on_start is not None:
            self.on_start(self.started_at)


async def _start(
    execution: Execution, started: _StartListener, run_as: RunAs | None, gate: _Gate | None
) -> asyncio.subprocess.Process:
    """Spawn the command; a cancel during the spawn kills the new process group, then re-raises.

    Cancelled inside ``create_subprocess_exec``, asyncio kills only the leader and then waits
    for the output pipe, which a child of the leader keeps open: the child would be left behind
    and the cancel would hang until it exits. A process that existed, however briefly, is
    reported as started either way.
    """
    spawning = asyncio.ensure_future(_spawn(execution, run_as, gate))
    try:
        process = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        with contextlib.suppress(OSError):
            process = await spawning
            started.notify()
            _signal_group(process.pid, signal.SIGKILL)
            await process.wait()
        raise
    started.notify()
    return process


async def _spawn(
    execution: Execution, run_as: RunAs | None, gate: _Gate | None
) -> asyncio.subprocess.Process:
    """Start the command in a new session (its own process group), as ``run_as`` if given."""
    argv = (execution.command, *execution.args)
    if execution.executor is Executor.SHELL:
        argv = ("/bin/sh", "-c", execution.command)
    if run_as is not None:
        argv = (*run_as.launcher(), *argv)
    environment = None if execution.env is None else dict(execution.env)
    if gate is not None:
        _check_executable(argv[0], environment)
        argv = gate.wrap(argv)
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL if gate is None else gate.read_end,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        env=environment,
    )


def _check_executable(program: str, env: dict[str, str] | None) -> None:
    """Raise the ``OSError`` exec would for ``program``: behind the gate it would be the shell's."""
    search = os.pathsep.join(os.get_exec_path(env))
    path = program if "/" in program else shutil.which(program, path=search)
    if path is None or not os.path.isfile(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    if not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)


async def _leader_exit(pid: int) -> None:
    """Return once process ``pid`` has exited, whether or not its pipes are still open.

    asyncio's ``Process.wait()`` may not report an exit until every pipe is closed, which a
    background child keeps open; a pidfd becomes readable the moment the leader exits.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # already exited and reaped
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_readable)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


async def _drain(process: asyncio.subprocess.Process, tail: OutputTail) -> None:
    """Copy the process's output into ``tail`` until end of file."""
    assert process.stdout is not None
    while chunk := await process.stdout.read(_READ_CHUNK):
        tail.write(chunk)


async def _kill_group(process: asyncio.subprocess.Process, reader: asyncio.Task[None]) -> None:
    """SIGTERM the process group, SIGKILL it after a grace period, and reap the leader."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(KILL_GRACE.total_seconds()):
            await asyncio.shield(process.wait())
    except TimeoutError:
        pass
    # Children may outlive the leader; the group id stays valid while any member lives.
    _signal_group(process.pid, signal.SIGKILL)
    await process.wait()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group that may already be gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _now() -> datetime:
    return datetime.now(UTC)
