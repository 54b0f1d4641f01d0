"""The web dashboard in a real browser, against a real cluster (master, eu/us, four workers).

The page is driven the way an operator would use it; the cluster is checked through the gRPC
client. Waits are generous: these tests prove behaviour, never speed.
"""

from __future__ import annotations

import time

from e2e_harness import RunningCluster
from playwright.sync_api import Page, expect

from taskmesh.client import Client
from taskmesh.common.model import RunState

UI_TIMEOUT_MS = 60_000
STATE_TIMEOUT = 90.0


def open_dashboard(page: Page, cluster: RunningCluster) -> None:
    """Load the dashboard and wait until its event stream is live."""
    page.goto(cluster.rest)
    expect(page.locator("#live-status")).to_have_text("live", timeout=UI_TIMEOUT_MS)


def wait_for_state(client: Client, task_id: str, state: RunState) -> None:
    """Poll the client until the task's latest run is in ``state``."""
    deadline = time.monotonic() + STATE_TIMEOUT
    while (run := client.get(task_id).latest_run) is None or run.state is not state:
        assert time.monotonic() < deadline, f"task {task_id} not {state} after {STATE_TIMEOUT}s"
        time.sleep(0.2)


def test_overview_shows_both_regions_and_their_workers(page: Page, cluster: RunningCluster) -> None:
    open_dashboard(page, cluster)
    for region in ("eu", "us"):
        card = page.locator(f'[data-region="{region}"]')
        expect(card.locator("h3")).to_have_text(region)
        expect(card.locator(".state").first).to_have_text("up", timeout=UI_TIMEOUT_MS)
        workers = card.locator("tr[data-worker]")
        expect(workers).to_have_count(2, timeout=UI_TIMEOUT_MS)
        for number in (1, 2):
            expect(card.locator(f'tr[data-worker="worker-{region}-{number}"]')).to_be_visible()


def test_submitted_task_appears_live_and_succeeds(page: Page, cluster: RunningCluster) -> None:
    open_dashboard(page, cluster)
    page.evaluate("window.loadedOnce = true")  # gone if the page were reloaded
    with cluster.client() as client:
        task = client.submit("sleep 1; echo from the dashboard test", name="dashboard-live")
    row = page.locator(f'#runs-table tr[data-task-id="{task.id}"]')
    expect(row.locator(".name")).to_have_text("dashboard-live", timeout=UI_TIMEOUT_MS)
    expect(row).to_have_attribute("data-state", "succeeded", timeout=UI_TIMEOUT_MS)
    assert page.evaluate("window.loadedOnce") is True

    row.click()  # the detail panel: timeline, exit code, output
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("dashboard-live", timeout=UI_TIMEOUT_MS)
    expect(detail.locator("pre.output")).to_have_text("from the dashboard test")
    steps = detail.locator('.timeline li[data-reached="true"]')
    expect(steps).to_have_count(5, timeout=UI_TIMEOUT_MS)
    expect(page.locator("#cancel-task")).to_be_disabled()


def test_cancel_from_the_ui_cancels_a_running_task(page: Page, cluster: RunningCluster) -> None:
    with cluster.client() as client:
        task = client.submit("sleep 60", name="dashboard-cancel")
        wait_for_state(client, str(task.id), RunState.RUNNING)
        open_dashboard(page, cluster)
        page.locator(f'#runs-table tr[data-task-id="{task.id}"]').click()
        cancel = page.locator("#cancel-task")
        expect(cancel).to_be_enabled(timeout=UI_TIMEOUT_MS)
        cancel.click()
        wait_for_state(client, str(task.id), RunState.CANCELLED)
    row = page.locator(f'#runs-table tr[data-task-id="{task.id}"]')
    expect(row).to_have_attribute("data-state", "cancelled", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#detail .state").first).to_have_text("cancelled", timeout=UI_TIMEOUT_MS)
