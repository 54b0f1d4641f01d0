"""The web dashboard in a real browser, against a real cluster (master, eu/us, four workers).

The page is driven the way an operator would use it; the cluster is checked through the gRPC
client. Waits are generous: these tests prove behaviour, never speed.
"""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

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


def post_json(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST a JSON body over REST; the JSON answer."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


def node_x(page: Page, task_id: str) -> float:
    """The x offset of a workflow node (its ``translate``)."""
    transform = page.locator(f'g.wf-node[data-task-id="{task_id}"]').get_attribute("transform")
    assert transform is not None
    return float(transform.removeprefix("translate(").split(",")[0])


def rect_fill(page: Page, task_id: str) -> str:
    """The computed fill colour of a workflow node's box."""
    return str(
        page.locator(f'g.wf-node[data-task-id="{task_id}"] rect').evaluate(
            "node => getComputedStyle(node).fill"
        )
    )


GREEN, RED = "rgb(226, 244, 234)", "rgb(251, 229, 229)"


def test_workflow_graph_draws_edges_and_recolours_live(page: Page, cluster: RunningCluster) -> None:
    open_dashboard(page, cluster)
    page.evaluate("window.loadedOnce = true")
    gate = cluster.state_file.parent / "workflow-gate"  # "extract" runs until the file exists
    tasks = [
        {
            "local_name": "extract",
            "name": "extract",
            "command": f"while [ ! -e {gate} ]; do sleep 0.1; done",
        },
        {"local_name": "clean", "name": "clean", "command": "true", "depends_on": ["extract"]},
        {"local_name": "check", "name": "check", "command": "exit 4", "depends_on": ["extract"]},
        {"local_name": "load", "name": "load", "command": "true", "depends_on": ["clean", "check"]},
        {"local_name": "report", "name": "report", "command": "true", "depends_on": ["load"]},
    ]
    answer = post_json(f"{cluster.rest}/v1/workflows", {"name": "ui-etl", "tasks": tasks})
    ids = answer["task_ids"]
    row = page.locator(f'#workflows-table tr[data-workflow-id="{answer["workflow_id"]}"]')
    row.click(timeout=UI_TIMEOUT_MS)  # reachable from the workflows list
    graph = page.locator("#workflow-graph")
    expect(graph.locator("g.wf-node")).to_have_count(5, timeout=UI_TIMEOUT_MS)
    edges = graph.locator("path.wf-edge")
    expect(edges).to_have_count(5)
    drawn = {
        (edges.nth(i).get_attribute("data-from"), edges.nth(i).get_attribute("data-to"))
        for i in range(5)
    }
    named = {("extract", "clean"), ("extract", "check"), ("clean", "load"), ("check", "load")}
    assert drawn == {(ids[a], ids[b]) for a, b in named | {("load", "report")}}
    assert all(edges.nth(i).get_attribute("marker-end") == "url(#wf-arrow)" for i in range(5))
    xs = [node_x(page, ids[name]) for name in ("extract", "clean", "load", "report")]
    assert xs == sorted(xs)
    assert len(set(xs)) == 4
    assert node_x(page, ids["clean"]) == node_x(page, ids["check"])
    blocked = graph.locator(f'g.wf-node[data-task-id="{ids["report"]}"]')
    expect(blocked).to_have_attribute("data-state", "blocked")

    gate.touch()  # now the workflow runs to its end; the page must follow without a reload
    final = {
        "extract": ("succeeded", GREEN),
        "clean": ("succeeded", GREEN),
        "check": ("failed", RED),
        "load": ("upstream_failed", RED),
        "report": ("upstream_failed", RED),
    }
    for name, (state, colour) in final.items():
        node = graph.locator(f'g.wf-node[data-task-id="{ids[name]}"]')
        expect(node).to_have_attribute("data-state", state, timeout=UI_TIMEOUT_MS)
        assert rect_fill(page, ids[name]) == colour, name
    assert page.evaluate("window.loadedOnce") is True

    graph.locator(f'g.wf-node[data-task-id="{ids["check"]}"]').click()  # node -> task detail
    detail = page.locator("#detail")
    expect(detail.locator("h2")).to_have_text("check", timeout=UI_TIMEOUT_MS)
    expect(detail.locator(".workflow-link")).to_be_visible()  # and back: detail -> workflow


def test_priority_changed_from_the_runs_table(page: Page, cluster: RunningCluster) -> None:
    with cluster.client() as client:
        later = datetime.now(UTC) + timedelta(hours=1)
        task = client.submit("true", name="ui-priority", at=later, priority=3)
        open_dashboard(page, cluster)
        row = page.locator(f'#runs-table tr[data-task-id="{task.id}"]')
        field = row.locator('input[name="priority"]')
        expect(field).to_have_value("3", timeout=UI_TIMEOUT_MS)
        field.fill("321")
        row.locator(".priority-form button").click()
        expect(page.locator("#runs-notice")).to_contain_text("set to 321", timeout=UI_TIMEOUT_MS)
        info = client.get(task.id)
    assert info.task.spec.priority == 321
    assert info.latest_run is not None
    assert info.latest_run.priority == 321
    page.reload()
    expect(row.locator('input[name="priority"]')).to_have_value("321", timeout=UI_TIMEOUT_MS)


def test_retry_from_the_ui_runs_a_failed_task_again(page: Page, cluster: RunningCluster) -> None:
    marker = cluster.state_file.parent / "ui-retry-marker"
    command = f"if [ -e {marker} ]; then echo second try; else touch {marker}; exit 9; fi"
    with cluster.client() as client:
        task = client.submit(command, name="ui-retry")
        wait_for_state(client, str(task.id), RunState.FAILED)
        open_dashboard(page, cluster)
        row = page.locator(f'#runs-table tr[data-task-id="{task.id}"]')
        retry = row.locator("button.retry")
        expect(retry).to_be_enabled(timeout=UI_TIMEOUT_MS)
        retry.click()
        expect(row).to_have_attribute("data-state", "succeeded", timeout=UI_TIMEOUT_MS)
        info = client.wait(task.id, timeout=STATE_TIMEOUT)
    assert [(run.attempt, run.state) for run in info.runs] == [
        (2, RunState.SUCCEEDED),
        (1, RunState.FAILED),
    ]
    assert info.runs[0].output_tail == "second try\n"
    expect(row.locator("button.retry")).to_be_disabled()
    expect(page.locator("#runs-notice")).to_contain_text("attempt 2")


def test_charts_show_throughput_and_pickup_latency(page: Page, cluster: RunningCluster) -> None:
    with cluster.client() as client:
        tasks = [client.submit("true", name=f"ui-chart-{n}") for n in range(6)]
        for task in tasks:
            client.wait(task.id, timeout=STATE_TIMEOUT)
    open_dashboard(page, cluster)
    bars = page.locator("#throughput-chart rect.bar[data-finished]")
    expect(bars.first).to_be_visible(timeout=UI_TIMEOUT_MS)
    finished = sum(
        int(bars.nth(i).get_attribute("data-finished") or 0) for i in range(bars.count())
    )
    assert finished >= len(tasks)
    p50 = page.locator('#latency-chart path[data-series="pickup_p50"]')
    assert (p50.get_attribute("d") or "").startswith("M")
    assert page.locator("#latency-chart circle.p95").count() >= 1
    expect(page.locator("#latency-chart .summary")).to_contain_text("p50")
    total = page.locator('#totals [data-total="succeeded"] b')
    assert int(total.inner_text()) >= len(tasks)
