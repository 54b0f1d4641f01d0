"""A cluster of real ``taskmesh`` processes that chaos scenarios kill, freeze and restart.

Unlike ``taskmesh up`` (which restarts whatever dies), nothing here restarts by itself: each
daemon is one child process the scenario controls, started with ``python -m taskmesh`` and
reporting its addresses on its READY line. A restarted daemon comes back on the addresses it
had, so the others find it again. The ledger is the cluster's own throwaway PostgreSQL, which
a scenario may halt and resume.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from taskmesh.client import Client
from taskmesh.common.embedded_postgres import EmbeddedPostgres
from taskmesh.common.readiness import READY_PREFIX, parse_ready_line

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
KIND_FAIL_MAX = 3  # failed runs of a kind in a row that open its breaker in a region
KIND_RESET = 1.0  # seconds an open kind breaker waits before its trial run


def chaos_topology(database_url: str, workers: int, slots: int) -> dict[str, Any]:
    """Two regions with short failure detection, so faults are noticed within seconds."""
    worker = {"count": workers, "slots": slots, "heartbeat_interval": "250ms"}
    worker["shutdown_timeout"] = "5s"
    region = {
        "capacity": 2000,
        "heartbeat_interval": "300ms",
        "worker_heartbeat_timeout": "1500ms",
        "shutdown_timeout": "10s",
        "lost_run_retries": 5,
        "workers": worker,
        "breakers": {"kind": {"fail_max": KIND_FAIL_MAX, "reset_timeout": f"{KIND_RESET:g}s"}},
    }
    return {
        "ledger": {"url": database_url},
        "master": {
            "dispatch_interval": "100ms",
            "region_heartbeat_timeout": "2s",
            "shutdown_timeout": "5s",
            "breaker": {"fail_max": 5, "reset_timeout": "1s"},
        },
        # Each region falls back on the other: a dead region's ``prefer`` runs move over.
        "regions": [
            {"name": "eu", "fallbacks": ["us"], **region},
            {"name": "us", "fallbacks": ["eu"], **region},
        ],
    }


@dataclass
class Daemon:
    """One daemon process: how to start it again, and where it listens."""

    name: str
    argv: list[str]
    log_path: Path
    addresses: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Spawn it and wait for its READY line."""
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        ready = threading.Event()
        assert self.process.stdout is not None
        copier = threading.Thread(target=self._copy, args=(self.process.stdout, ready), daemon=True)
        copier.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not ready.wait(0.05):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.name} did not start:\n{self.log()}")

    def _copy(self, stream: IO[bytes], ready: threading.Event) -> None:
        """Append the output to the log; set ``ready`` on the READY line."""
        with self.log_path.open("ab") as log:
            for line in stream:
                log.write(line)
                log.flush()
                text = line.decode(errors="replace").strip()
                if text.startswith(READY_PREFIX) and not ready.is_set():
                    self.addresses = parse_ready_line(text)
                    ready.set()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the daemon itself (not its children)."""
        if self.alive:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        if self.process is not None:
            self.process.wait()

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (SIGCONT first, in case it is frozen), then SIGKILL after ``timeout``."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGCONT)
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def readiness(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body of the daemon's ``/readyz``."""
        url = f"http://{self.addresses['http']}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


class ChaosCluster:
    """Master(s), regions ``eu`` and ``us`` and their workers, on a ledger it can restart."""

    def __init__(self, base: Path, server: EmbeddedPostgres, database: str, **sizes: int) -> None:
        self.base = base
        self.server = server
        self.database = database
        self.topology_path = base / "topology.yaml"
        self.topology_path.write_text(yaml.safe_dump(chaos_topology(server.url(database), **sizes)))
        self.workers_per_region = sizes["workers"]
        self.slots_per_worker = sizes["slots"]
        self.log_dir = base / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.regions: dict[str, Daemon] = {}
        self.masters: list[Daemon] = []
        self.workers: dict[str, Daemon] = {}

    @property
    def database_url(self) -> str:
        return self.server.url(self.database)

    def start(self) -> None:
        """Regions, one master, then every worker."""
        for name in ("eu", "us"):
            self.start_region(name)
        self.start_master()
        for region in self.regions:
            for index in range(self.workers_per_region):
                self.start_worker(region, index)

    def _daemon(self, name: str, args: list[str]) -> Daemon:
        argv = [sys.executable, "-m", "taskmesh", *args, "--topology", str(self.topology_path)]
        return Daemon(name, argv, self.log_dir / f"{name}.log")

    def start_region(self, name: str) -> Daemon:
        """Start region ``name``, on the addresses it had if it ran before."""
        daemon = self.regions.get(name)
        if daemon is None:
            daemon = self._daemon(f"region-{name}", ["region", "--name", name])
            self.regions[name] = daemon
            daemon.start()
            daemon.argv += ["--grpc-address", daemon.addresses["grpc"]]
            daemon.argv += ["--http-address", daemon.addresses["http"]]
        else:
            daemon.start()
        return daemon

    def start_master(self) -> Daemon:
        """Start one more master (several may run at once)."""
        args = ["master"]
        for name, region in self.regions.items():
            args += ["--region", f"{name}={region.addresses['grpc']}"]
        daemon = self._daemon(f"master-{len(self.masters) + 1}", args)
        daemon.start()
        self.masters.append(daemon)
        return daemon

    def start_worker(self, region: str, index: int) -> Daemon:
        """Start (or restart under the same id) worker ``index`` of ``region``."""
        name = f"worker-{region}-{index + 1}"
        daemon = self.workers.get(name)
        if daemon is None:
            address = self.regions[region].addresses["grpc"]
            args = ["worker", "--region", region, "--id", name, "--region-address", address]
            daemon = self._daemon(name, args)
            self.workers[name] = daemon
        daemon.start()
        return daemon

    def live_master(self) -> Daemon:
        """A master that is running."""
        return next(master for master in self.masters if master.alive)

    def client(self) -> Client:
        return Client(self.live_master().addresses["grpc"], timeout=30.0)

    def stop(self) -> None:
        """Workers, masters, then regions, each with SIGTERM."""
        for tier in (list(self.workers.values()), self.masters, list(self.regions.values())):
            for daemon in tier:
                daemon.stop()

    def logs(self) -> str:
        daemons = [*self.regions.values(), *self.masters, *self.workers.values()]
        return "\n".join(f"--- {daemon.name}\n{daemon.log()}" for daemon in daemons)
