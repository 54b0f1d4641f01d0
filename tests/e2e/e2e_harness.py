"""Running `taskmesh up` for e2e tests, and the handle tests get on it (imported by conftest
and by test modules that need a cluster of another shape)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskmesh.client import Client

START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
KIND_BREAKER_RESET = 5.0  # seconds an open kind breaker of region us waits for its trial run


@dataclass
class RunningCluster:
    """Addresses of a running `taskmesh up`, as its state file tells them."""

    state_file: Path
    log_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_file.read_text()))

    @property
    def master(self) -> str:
        return str(self.state["master"]["grpc"])

    @property
    def rest(self) -> str:
        return str(self.state["master"]["rest"])

    def client(self, token: str | None = None) -> Client:
        return Client(self.master, token=token)

    def cli(
        self, *args: str, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``taskmesh ARGS --master`` this cluster's master; ``check`` asserts exit 0."""
        result = subprocess.run(
            [sys.executable, "-m", "taskmesh", *args, "--master", self.master],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **env} if env else None,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def worker_pid(self, worker_id: str) -> int:
        return int(self.state["workers"][worker_id]["pid"])

    def region_pid(self, name: str) -> int:
        return int(self.state["regions"][name]["pid"])

    def logs(self) -> str:
        parts = [f"--- {path.name}\n{path.read_text()[-4000:]}" for path in self.log_dir.glob("*")]
        return "\n".join(parts)


def e2e_topology(database_url: str) -> dict[str, Any]:
    """Two regions of two workers each, with short failure-detection timeouts.

    eu falls back to us; the master's region breakers open after 2 failed calls and try again
    after 2 s; us holds a task kind back after 2 failures in a row for 5 s.
    """
    workers = {"count": 2, "slots": 4, "heartbeat_interval": "250ms"}
    region = {"worker_heartbeat_timeout": "2s", "capacity": 1000, "workers": workers}
    master = {
        "dispatch_interval": "200ms",
        "region_heartbeat_timeout": "10s",
        "breaker": {"fail_max": 2, "reset_timeout": "2s"},
        "delegation_retry": {"attempts": 2, "initial_backoff": "50ms", "max_backoff": "100ms"},
    }
    kind_breaker = {"fail_max": 2, "reset_timeout": f"{KIND_BREAKER_RESET:g}s"}
    return {
        "ledger": {"url": database_url},
        "master": master,
        "regions": [
            {"name": "eu", "fallbacks": ["us"], **region},
            {"name": "us", "breakers": {"kind": kind_breaker}, **region},
        ],
    }


@contextmanager
def running_cluster(
    base: Path,
    database_admin: Any,
    template_database: str,
    topology_of: Callable[[str], dict[str, Any]] = e2e_topology,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[RunningCluster]:
    """`taskmesh up` of ``topology_of(database_url)`` on a fresh ledger; SIGTERM at the end.

    Modules that need another shape of cluster override ``cluster`` with their own topology;
    ``extra_env`` adds variables to the supervisor's environment.
    """
    with database_admin.fresh_database(template_database) as database_url:
        topology = base / "topology.yaml"
        topology.write_text(yaml.safe_dump(topology_of(database_url)))
        running = _start(base, topology, extra_env or {})
        try:
            yield running
        finally:
            _stop(running)


def _start(base: Path, topology: Path, extra_env: Mapping[str, str]) -> RunningCluster:
    state_file, log_dir = base / "cluster.json", base / "logs"
    argv = [sys.executable, "-m", "taskmesh", "up", "--topology", str(topology)]
    argv += ["--state-file", str(state_file), "--log-dir", str(log_dir)]
    env = {k: v for k, v in os.environ.items() if k != "TASKMESH_DATABASE_URL"}
    env.update(extra_env)
    output = (base / "up.log").open("wb")
    process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT, env=env)
    running = RunningCluster(state_file, log_dir, process)
    deadline = time.monotonic() + START_TIMEOUT
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            _stop(running)
            log = (base / "up.log").read_text()
            pytest.fail(f"taskmesh up did not start:\n{log}\n{running.logs()}")
        time.sleep(0.1)
    return running


def _stop(running: RunningCluster) -> None:
    """SIGTERM the supervisor (it stops every daemon), then make sure it is gone."""
    process = running.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"taskmesh up did not stop within {STOP_TIMEOUT}s:\n{running.logs()}")


def make_certificates(directory: Path, name: str) -> dict[str, str]:
    """A fresh CA and one certificate it signs (for 127.0.0.1 and localhost, server and client
    use), made with the ``openssl`` command; returns the topology's ``tls`` mapping."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / f"{name}-ca.pem", directory / f"{name}-ca.key"
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    request, extensions = directory / f"{name}.csr", directory / f"{name}.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=critical,CA:FALSE\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    ca_extensions = ["basicConstraints=critical,CA:TRUE", "keyUsage=critical,keyCertSign,cRLSign"]
    commands = [
        ["openssl", "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2"],
        ["openssl", "req", *ec, "-keyout", key, "-out", request, "-subj", f"/CN={name} node"],
        ["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-days", "2"],
    ]
    commands[0] += ["-subj", f"/CN={name} test CA"]
    commands[0] += [part for extension in ca_extensions for part in ("-addext", extension)]
    commands[2] += ["-CAcreateserial", "-out", cert, "-extfile", extensions]
    for command in commands:
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return {"ca": str(ca), "cert": str(cert), "key": str(key)}
