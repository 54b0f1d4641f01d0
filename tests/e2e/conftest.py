"""A real cluster for end-to-end tests: `taskmesh up` as a child process, on the test PostgreSQL.

Tests talk to it only through its public interfaces: the gRPC client stub, REST, and the CLI.
The cluster is shared by the tests of one module (starting seven Python processes costs a few
seconds); each module gets its own fresh ledger database. Browser tests get a headless Debian
Chromium driven by Playwright (``browser``) and a fresh ``page`` per test, whose screenshot is
saved to ``artifacts/screenshots/<test>.png`` when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_harness import RunningCluster, running_cluster
from playwright.sync_api import Browser, Page, sync_playwright

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


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, database_admin: Any, template_database: str
) -> Iterator[RunningCluster]:
    """`taskmesh up` on a fresh ledger database; stopped (SIGTERM) after the module."""
    base = tmp_path_factory.mktemp("cluster")
    with running_cluster(base, database_admin, template_database) as running:
        yield running


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
