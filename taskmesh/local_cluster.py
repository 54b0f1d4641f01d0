"""``taskmesh up``: a whole cluster on this machine, as supervised child processes.

Regions start first (the master needs their addresses), then the master, then each region's
workers. Every daemon prints one ``READY key=host:port ...`` line on stdout once it serves; the
supervisor reads the bound addresses from it, so topology ports of 0 work. A child that dies is
restarted with backoff on the same addresses. SIGINT/SIGTERM stop workers, master and regions
in that order, each gracefully within a bound.

Workers never get database credentials: they read a copy of the topology without
``ledger.url`` (``worker-topology.yaml`` beside the logs) and an environment without
``TASKMESH_DATABASE_URL`` or libpq's ``PG*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from taskmesh.common.errors import TaskmeshError
from taskmesh.common.readiness import READY_PREFIX, parse_ready_line
from taskmesh.common.retry_policies import restart_delay
from taskmesh.common.topology import DATABASE_URL_VARIABLE, Topology, dump_topology

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0
STOP_TIMEOUT = 40.0
WORKER_TOPOLOGY = "worker-topology.yaml"


class ChildFailedError(TaskmeshError):
    """A daemon exited before it reported ready."""


@dataclass
class Child:
    """One daemon process: how to start it, and what it reported when ready."""

    name: str
    tier: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None  # None: the supervisor's own environment
    addresses: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    _pump: asyncio.Task[None] | None = None

    async def start(self) -> dict[str, str]:
        """Spawn the process and wait for its READY line; returns the addresses it reported."""
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children
            env=self.env,
        )
        ready: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()
        self._pump = asyncio.create_task(self._copy_output(ready), name=f"output-{self.name}")
        try:
            async with asyncio.timeout(START_TIMEOUT):
                self.addresses = await ready
        except (TimeoutError, ChildFailedError):
            await self.stop(grace=2.0)
            raise
        return self.addresses

    async def _copy_output(self, ready: asyncio.Future[dict[str, str]]) -> None:
        """Append the child's output to its log; resolve ``ready`` on its READY line."""
        assert self.process is not None
        assert self.process.stdout is not None
        with self.log_path.open("ab") as log:
            while line := await self.process.stdout.readline():
                log.write(line)
                log.flush()
                text = line.decode(errors="replace").strip()
                if text.startswith(READY_PREFIX) and not ready.done():
                    ready.set_result(parse_ready_line(text))
        if not ready.done():
            code = await self.process.wait()
            ready.set_exception(
                ChildFailedError(
                    f"{self.name} exited with status {code} before it was ready; "
                    f"see {self.log_path}"
                )
            )

    def describe(self) -> dict[str, object]:
        """Addresses and process id, for the state file."""
        pid = self.process.pid if self.process else None
        return {**self.addresses, "pid": pid, "log": str(self.log_path)}

    async def wait(self) -> int:
        """Wait for the process to exit; its exit status."""
        assert self.process is not None
        code = await self.process.wait()
        if self._pump is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        return code

    async def stop(self, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once the process is gone."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.wait()
        except TimeoutError:
            logger.warning("%s did not stop within %.0fs; killing it", self.name, grace)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await self.wait()


class LocalCluster:
    """Starts, supervises and stops every daemon of a topology on this machine."""

    def __init__(
        self,
        topology: Topology,
        topology_path: Path,
        database_url: str,
        log_dir: Path,
        state_file: Path,
        *,
        log_format: str = "text",
    ) -> None:
        self.topology = topology
        self.log_format = log_format  # text keeps the log files readable; json for shippers
        self.state_file = state_file
        self.topology_path = topology_path
        self.database_url = database_url
        self.log_dir = log_dir
        self.regions: dict[str, Child] = {}
        self.master: Child | None = None
        self.workers: dict[str, Child] = {}
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start regions, master and workers; raise (after stopping what started) on failure."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._write_worker_topology()
        try:
            await asyncio.gather(*(self._start_region(r.name) for r in self.topology.regions))
            self.master = self._master_child()
            await self.master.start()
            workers = [
                self._worker_child(r.name, i)
                for r in self.topology.regions
                for i in range(r.workers.count)
            ]
            self.workers = {child.name: child for child in workers}
            await asyncio.gather(*(child.start() for child in workers))
        except BaseException:
            await self.stop()
            raise
        write_state_file(self.state_file, self.state())

    async def supervise(self) -> None:
        """Restart any child that dies, until ``stop`` is called."""
        async with asyncio.TaskGroup() as group:
            for child in self.children():
                group.create_task(self._watch(child), name=f"watch-{child.name}")
            group.create_task(self._stopping.wait(), name="stop-signal")

    async def stop(self) -> None:
        """Stop workers, then the master, then regions; each tier gracefully within a bound."""
        self._stopping.set()
        for tier in (
            list(self.workers.values()),
            [self.master] if self.master else [],
            list(self.regions.values()),
        ):
            await asyncio.gather(*(child.stop(STOP_TIMEOUT) for child in tier))

    def children(self) -> list[Child]:
        """Every child, regions first."""
        master = [self.master] if self.master else []
        return [*self.regions.values(), *master, *self.workers.values()]

    def state(self) -> dict[str, Any]:
        """What `taskmesh status/list/...` and people need to find the cluster."""
        master = self.master.addresses if self.master else {}
        return {
            "supervisor_pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(),
            "topology": str(self.topology_path),
            "database_url": self.database_url,
            "master": {
                **(self.master.describe() if self.master else {}),
                "rest": f"http://{master.get('http', '')}",
            },
            "regions": {name: child.describe() for name, child in self.regions.items()},
            "workers": {name: child.describe() for name, child in self.workers.items()},
            "logs": str(self.log_dir),
        }

    async def _watch(self, child: Child) -> None:
        """Wait for ``child`` to exit; restart it with backoff unless the cluster is stopping."""
        while True:
            code = await child.wait()
            if self._stopping.is_set():
                return
            child.restarts += 1
            delay = restart_delay(child.restarts)
            logger.warning("%s exited with status %s; restarting in %.1fs", child.name, code, delay)
            await asyncio.sleep(delay)
            if self._stopping.is_set():
                return
            with contextlib.suppress(ChildFailedError, TimeoutError):
                await child.start()
                write_state_file(self.state_file, self.state())  # its pid changed

    async def _start_region(self, name: str) -> None:
        child = self._child(
            name=f"region-{name}",
            tier="region",
            args=["region", "--name", name],
        )
        child.env = self._ledger_environment()
        self.regions[name] = child
        await child.start()
        # A restart must come back on the same addresses: the master and workers know them.
        child.argv += [
            "--grpc-address",
            child.addresses["grpc"],
            "--http-address",
            child.addresses["http"],
        ]

    def _master_child(self) -> Child:
        routes = [f"{name}={child.addresses['grpc']}" for name, child in self.regions.items()]
        args = ["master"]
        for route in routes:
            args += ["--region", route]
        child = self._child(name="master", tier="master", args=args)
        child.env = self._ledger_environment()
        return child

    def _ledger_environment(self) -> dict[str, str]:
        """The environment of a tier that writes the ledger: its URL, out of ``ps`` listings."""
        return {**os.environ, DATABASE_URL_VARIABLE: self.database_url}

    def _worker_child(self, region: str, index: int) -> Child:
        name = f"worker-{region}-{index + 1}"
        child = self._child(
            name=name,
            tier="worker",
            args=[
                "worker",
                "--region",
                region,
                "--id",
                name,
                "--region-address",
                self.regions[region].addresses["grpc"],
            ],
            topology=self.log_dir / WORKER_TOPOLOGY,
        )
        child.env = without_database_credentials(os.environ)
        return child

    def _write_worker_topology(self) -> None:
        """The topology workers read: every key but the ledger URL, readable by us only."""
        path = self.log_dir / WORKER_TOPOLOGY
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(dump_topology(self.topology))

    def _child(
        self, name: str, tier: str, args: Sequence[str], topology: Path | None = None
    ) -> Child:
        path = topology or self.topology_path
        argv = [sys.executable, "-m", "taskmesh", *args, "--topology", str(path)]
        argv += ["--log-format", self.log_format]
        return Child(name, tier, argv, self.log_dir / f"{name}.log")


def without_database_credentials(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the ledger URL and libpq's connection variables (``PG*``)."""
    return {
        name: value
        for name, value in environ.items()
        if name != DATABASE_URL_VARIABLE and not name.startswith("PG")
    }


def write_state_file(path: Path, state: dict[str, Any]) -> None:
    """Write the cluster's addresses as JSON, readable by this user only (it holds the URL)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(state, handle, indent=2)
        handle.write("\n")
    temporary.replace(path)
