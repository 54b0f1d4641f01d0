"""A real cluster for end-to-end tests: `taskmesh up` as a child process, on the test PostgreSQL.

Tests talk to it only through its public interfaces: the gRPC client stub, REST, and the CLI.
The cluster is shared by the tests of one module (starting seven Python processes costs a few
seconds); each module gets its own fresh ledger database. Browser tests get a headless Debian
Chromium driven by Playwright (``browser``) and a fresh ``page`` per test, whose screenshot is
saved to ``artifacts/screenshots/<test>.png`` when the test ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_harness import RunningCluster
from playwright.sync_api import Browser, Page, sync_playwright

START_TIMEOUT = 90.0
STOP_TIMEOUT = 60.0
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; never a browser download of Playwright's own
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def e2e_topology(database_url: str) -> dict[str, Any]:
    """Two regions of two workers each, with short failure-detection timeouts."""
    workers = {"count": 2, "slots": 4, "heartbeat_interval": "250ms"}
    region = {"worker_heartbeat_timeout": "2s", "capacity": 1000, "workers": workers}
    return {
        "ledger": {"url": database_url},
        "master": {"dispatch_interval": "200ms", "region_heartbeat_timeout": "10s"},
        "regions": [{"name": "eu", **region}, {"name": "us", **region}],
    }


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, database_admin: Any, template_database: str
) -> Iterator[RunningCluster]:
    """`taskmesh up` on a fresh ledger database; stopped (SIGTERM) after the module."""
    base = tmp_path_factory.mktemp("cluster")
    with database_admin.fresh_database(template_database) as database_url:
        topology = base / "topology.yaml"
        topology.write_text(yaml.safe_dump(e2e_topology(database_url)))
        running = _start(base, topology)
        try:
            yield running
        finally:
            _stop(running)


def _start(base: Path, topology: Path) -> RunningCluster:
    state_file, log_dir = base / "cluster.json", base / "logs"
    argv = [sys.executable, "-m", "taskmesh", "up", "--topology", str(topology)]
    argv += ["--state-file", str(state_file), "--log-dir", str(log_dir)]
    env = {k: v for k, v in os.environ.items() if k != "TASKMESH_DATABASE_URL"}
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


@pytest.fixture(scope="module")
def browser(cluster: RunningCluster) -> Iterator[Browser]:
    """Headless Chromium for the module's tests.

    It starts after ``cluster`` and closes before it: Playwright's sync API keeps an event loop
    running in this thread, and the cluster's database set-up and teardown need the thread free.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make chromium` installs Debian's chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser page; its screenshot goes to ``artifacts/screenshots/<test>.png``."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    opened = context.new_page()
    try:
        yield opened
    finally:
        shots = request.config.rootpath / "artifacts" / "screenshots"
        shots.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=shots / f"{request.node.name}.png", full_page=True)
        context.close()
