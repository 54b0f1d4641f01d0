"""Autoscaling: the region sizes its worker pool to its load through the operator's command.

Every ``interval`` the region computes how many workers its load calls for (queued + running
runs, see ``AutoscalingConfig.desired_workers``), publishes it (``desired_workers`` on
``/metrics``), and when it differs from what it last asked for, runs the command, at most once
per ``cooldown``. The command sets the pool to ``{desired}`` (``docker service scale``,
``kubectl scale``, ``systemctl start/stop taskmesh-worker@...``), so running it twice is
harmless; one that fails or times out is tried again after the cooldown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable, Sequence

from taskmesh.common.topology import AutoscalingConfig
from taskmesh.common.topology.autoscaling import render_command
from taskmesh.region.runtime import RegionRuntime

log = logging.getLogger(__name__)

CommandRunner = Callable[[Sequence[str], float], Awaitable[bool]]


async def run_scaling_command(argv: Sequence[str], time_limit: float) -> bool:
    """Run ``argv`` to completion within ``time_limit`` seconds, logging its output; True on 0.

    It runs in a session of its own, so on timeout its whole process group is killed. What it
    starts in the background must not keep its stdout open, or it counts as still running.
    """
    log.info("autoscaling: running %s", shlex.join(argv))
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as error:
        log.error("autoscaling: the command could not start: %s", error)
        return False
    try:
        async with asyncio.timeout(time_limit):
            output, _ = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
        log.error("autoscaling: the command did not finish within %.0fs; killed it", time_limit)
        return False
    for line in output.decode(errors="replace").splitlines():
        log.info("autoscaling command: %s", line)
    if process.returncode != 0:
        log.warning("autoscaling: the command exited with status %s", process.returncode)
        return False
    return True


class Autoscaler:
    """The region's autoscaling loop (one of its background loops)."""

    def __init__(
        self,
        runtime: RegionRuntime,
        config: AutoscalingConfig,
        run_command: CommandRunner = run_scaling_command,
    ) -> None:
        self._runtime = runtime
        self._config = config
        self._run_command = run_command
        self._stopping = asyncio.Event()
        self._requested: int | None = None  # what the last successful command asked for
        # The first command waits one cooldown: workers started with the region connect first.
        self._last_command_at = runtime.clock()

    def stop(self) -> None:
        """Ask ``run`` to return."""
        self._stopping.set()

    async def run(self) -> None:
        """Look at the load every ``interval`` until stopped."""
        seconds = self._config.interval.total_seconds()
        while not self._stopping.is_set():
            await self.evaluate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._stopping.wait()

    @property
    def current_workers(self) -> int:
        """Workers connected and taking work (draining ones are on their way out)."""
        return sum(1 for worker in self._runtime.registry if not worker.draining)

    def desired_workers(self) -> int:
        """The pool size the load calls for now; also published on ``/metrics``."""
        runtime = self._runtime
        load = len(runtime.queue) + runtime.registry.running
        desired = self._config.desired_workers(load, runtime.config.workers.slots)
        runtime.desired_workers = desired
        return desired

    async def evaluate(self) -> None:
        """One look: run the command if the desired size changed and the cooldown is over."""
        desired, current = self.desired_workers(), self.current_workers
        asked = current if self._requested is None else self._requested
        cooling = self._runtime.clock() - self._last_command_at < self._cooldown
        if desired == asked or cooling or self._runtime.draining:
            return
        self._last_command_at = self._runtime.clock()
        log.info("autoscaling region %s: %d workers -> %d", self._runtime.name, current, desired)
        argv = render_command(
            self._config.command,
            region=self._runtime.name,
            desired=desired,
            current=current,
            address=self._runtime.address,
        )
        if await self._run_command(argv, self._config.command_timeout.total_seconds()):
            self._requested = desired

    @property
    def _cooldown(self) -> float:
        return self._config.cooldown.total_seconds()
