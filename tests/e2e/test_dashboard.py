"""The web dashboard in a real browser, against a real cluster (master, eu/us, four workers).

The page is driven the way an operator would use it; the cluster is checked through the gRPC
client. Waits are generous: these tests prove behaviour, never speed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from e2e_harness import RunningCluster
from playwright.sync_api import Page, expect

from taskmesh.client import Client
from taskmesh.common.model import Placement, RunState

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


def gated(gate: Path) -> str:
    """A command that runs until ``gate`` exists."""
    return f"while [ ! -e {gate} ]; do sleep 0.1; done"


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


def test_the_map_splits_a_region_queue_by_priority(page: Page, cluster: RunningCluster) -> None:
    gate = cluster.state_file.parent / "queue-gate"
    with cluster.client() as client:
        # Fill us's 8 slots (2 workers x 4), then queue three runs behind them.
        busy = [client.submit(gated(gate), region="us", priority=100) for _ in range(8)]
        for task in busy:
            wait_for_state(client, str(task.id), RunState.RUNNING)
        queued = [client.submit(gated(gate), region="us", priority=p) for p in (7, 7, -2)]
        open_dashboard(page, cluster)
        queue = page.locator('[data-region="us"] dd[data-figure="queue"]')
        expect(queue.locator('[data-priority="7"]')).to_have_text("p7 2", timeout=UI_TIMEOUT_MS)
        expect(queue.locator('[data-priority="-2"]')).to_have_text("p-2 1")
        expect(queue).to_contain_text("3")
        workers = page.locator('[data-region="us"] tr[data-worker]')
        expect(workers.first).to_contain_text("4/4")
        gate.touch()
        for task in busy + queued:
            wait_for_state(client, str(task.id), RunState.SUCCEEDED)
    expect(queue.locator("[data-priority]")).to_have_count(0, timeout=UI_TIMEOUT_MS)


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
    # Every transition from the event log, oldest first, with where it happened.
    transitions = detail.locator(".transitions li")
    expect(transitions.last).to_have_attribute("data-to-state", "succeeded")
    states = transitions.evaluate_all("items => items.map(item => item.dataset.toState)")
    assert states[0] == "pending"
    assert is_subsequence(["pending", "delegated", "assigned", "running", "succeeded"], states)
    expect(transitions.last).to_contain_text("worker-")


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    """Whether ``wanted`` occurs in ``seen`` in order (other items may come between)."""
    rest = iter(seen)
    return all(item in rest for item in wanted)


def test_cancel_from_the_ui_cancels_a_running_task(page: Page, cluster: RunningCluster) -> None:
    with cluster.client() as client:
        task = client.submit("sleep 60", name="dashboard-cancel")
        from_row = client.submit("sleep 60", name="dashboard-cancel-row")
        wait_for_state(client, str(task.id), RunState.RUNNING)
        wait_for_state(client, str(from_row.id), RunState.RUNNING)
        open_dashboard(page, cluster)
        page.locator(f'#runs-table tr[data-task-id="{task.id}"]').click()
        cancel = page.locator("#cancel-task")  # from the detail panel
        expect(cancel).to_be_enabled(timeout=UI_TIMEOUT_MS)
        cancel.click()
        wait_for_state(client, str(task.id), RunState.CANCELLED)
        other = page.locator(f'#runs-table tr[data-task-id="{from_row.id}"]')
        other.locator("button.cancel").click()  # from the runs table
        wait_for_state(client, str(from_row.id), RunState.CANCELLED)
    row = page.locator(f'#runs-table tr[data-task-id="{task.id}"]')
    expect(row).to_have_attribute("data-state", "cancelled", timeout=UI_TIMEOUT_MS)
    expect(page.locator("#detail .state").first).to_have_text("cancelled", timeout=UI_TIMEOUT_MS)
    expect(other).to_have_attribute("data-state", "cancelled", timeout=UI_TIMEOUT_MS)
    expect(other.locator("button.cancel")).to_be_disabled()
    expect(page.locator("#runs-notice")).to_contain_text(f"cancel of {str(from_row.id)[:8]}")
    assert page.locator("#detail h2").inner_text() == "dashboard-cancel"  # no row selected


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


def address_query(page: Page) -> dict[str, list[str]]:
    """The query of the page's address, parsed."""
    return parse_qs(urlsplit(page.url).query)


def test_runs_filters_by_kind_task_and_time_live_and_in_the_address(
    page: Page, cluster: RunningCluster
) -> None:
    tag = uuid.uuid4().hex[:8]
    kind, gate = f"ui-kind-{tag}", cluster.state_file.parent / f"filters-gate-{tag}"
    # The address carries the filters: this view shows only running runs of one kind.
    page.goto(f"{cluster.rest}/?kind={kind}&state=running")
    expect(page.locator("#live-status")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    filters = page.locator("#run-filters")
    expect(filters.locator('input[name="kind"]')).to_have_value(kind)
    expect(filters.locator('select[name="state"]')).to_have_value("running")
    page.evaluate("window.loadedOnce = true")
    rows = page.locator("#runs-table tbody tr[data-task-id]")
    with cluster.client() as client:
        other = client.submit(gated(gate), name=f"ui-other-{tag}", kind=f"other-{tag}")
        first = client.submit(gated(gate), name=f"ui-first-{tag}", kind=kind)
        wait_for_state(client, str(other.id), RunState.RUNNING)
        # Joins live when it starts running; the other kind, running too, never shows.
        expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(rows.first).to_have_attribute("data-task-id", str(first.id))
        expect(rows.first).to_have_attribute("data-state", "running")
        gate.touch()  # both finish: the row leaves this running-only view, still without a reload
        expect(rows).to_have_count(0, timeout=UI_TIMEOUT_MS)
        expect(page.locator("#runs-empty")).to_be_visible()
        wait_for_state(client, str(other.id), RunState.SUCCEEDED)

        filters.locator('select[name="state"]').select_option("")  # any state: it is back
        expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(rows.first).to_have_attribute("data-state", "succeeded")
        assert address_query(page) == {"kind": [kind]}

        # Created after an instant between two submissions: only the later task.
        time.sleep(1.1)
        between = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        time.sleep(2.1)
        second = client.submit("true", name=f"ui-second-{tag}", kind=kind)
        expect(rows).to_have_count(2, timeout=UI_TIMEOUT_MS)  # joins live: no filter excludes it
        filters.locator('select[name="since"]').select_option("custom")
        after = filters.locator('input[name="since_at"]')
        expect(after).to_be_visible()
        local = page.evaluate(
            "instant => { const d = new Date(instant);"
            " return new Date(d - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19); }",
            between.isoformat(),
        )
        after.fill(local)
        expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(rows.first).to_have_attribute("data-task-id", str(second.id))
        expect(page).to_have_url(re.compile(r"since=2"), timeout=UI_TIMEOUT_MS)
        since = datetime.fromisoformat(address_query(page)["since"][0])
        assert since == between

        # The task field: a piece of the name, or the start of the id.
        filters.locator('select[name="since"]').select_option("3600")
        expect(rows).to_have_count(2, timeout=UI_TIMEOUT_MS)
        search = filters.locator('input[name="search"]')
        search.fill(f"first-{tag}")
        expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(rows.first).to_have_attribute("data-task-id", str(first.id))
        search.fill(str(second.id)[:8])
        expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
        expect(rows.first).to_have_attribute("data-task-id", str(second.id))
        expect(page).to_have_url(re.compile(r"search="), timeout=UI_TIMEOUT_MS)
        assert address_query(page) == {
            "kind": [kind],
            "search": [str(second.id)[:8]],
            "since": ["3600"],
        }
        assert page.evaluate("window.loadedOnce") is True

    page.reload()  # the address restores every control and the same rows
    expect(filters.locator('input[name="search"]')).to_have_value(str(second.id)[:8])
    expect(filters.locator('select[name="since"]')).to_have_value("3600")
    expect(filters.locator('input[name="kind"]')).to_have_value(kind)
    expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(rows.first).to_have_attribute("data-task-id", str(second.id))

    instant = between.isoformat().replace("+00:00", "Z")  # a link with a picked instant
    page.goto(f"{cluster.rest}/?kind={kind}&since={instant}")
    expect(filters.locator('select[name="since"]')).to_have_value("custom")
    expect(filters.locator('input[name="since_at"]')).to_have_value(local)
    expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(rows.first).to_have_attribute("data-task-id", str(second.id))


def test_runs_table_pages_through_a_filtered_view(page: Page, cluster: RunningCluster) -> None:
    kind = f"ui-pages-{uuid.uuid4().hex[:8]}"
    later = datetime.now(UTC) + timedelta(hours=1)  # due later: they wait in the ledger
    with cluster.client() as client:
        ids = [str(client.submit("true", kind=kind, at=later).id) for _ in range(53)]
    page.goto(f"{cluster.rest}/?kind={kind}")
    expect(page.locator("#live-status")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    rows = page.locator("#runs-table tbody tr[data-task-id]")
    expect(rows).to_have_count(50, timeout=UI_TIMEOUT_MS)
    expect(rows.first).to_have_attribute("data-task-id", ids[-1])  # newest first
    older, newer = page.locator("#page-older"), page.locator("#page-newer")
    expect(newer).to_be_disabled()
    older.click()
    expect(rows).to_have_count(3, timeout=UI_TIMEOUT_MS)
    shown = rows.evaluate_all("items => items.map(item => item.dataset.taskId)")
    assert shown == ids[2::-1]
    expect(page.locator("#page-number")).to_have_text("page 2")
    expect(older).to_be_disabled()
    newer.click()
    expect(rows).to_have_count(50, timeout=UI_TIMEOUT_MS)
    expect(page.locator("#page-number")).to_have_text("page 1")
    with cluster.client() as client:
        client.cancel(ids[-1])  # a live change on page 1 shows without a reload
    expect(rows.first).to_have_attribute("data-state", "cancelled", timeout=UI_TIMEOUT_MS)


def save_screenshot(page: Page, request: pytest.FixtureRequest, moment: str) -> None:
    """A screenshot of this moment of the test: ``artifacts/screenshots/<test>-<moment>.png``."""
    shots = request.config.rootpath / "artifacts" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=shots / f"{request.node.name}-{moment}.png", full_page=True)


def test_a_region_breaker_opening_shows_on_the_map_then_closes(
    page: Page, cluster: RunningCluster, request: pytest.FixtureRequest
) -> None:
    open_dashboard(page, cluster)
    eu_card, us_card = page.locator('[data-region="eu"]'), page.locator('[data-region="us"]')
    expect(eu_card).to_have_attribute("data-breaker", "closed", timeout=UI_TIMEOUT_MS)
    with cluster.client() as client:  # us holds a kind back after 2 failures in a row
        for flaky in [client.submit("exit 3", region="us", kind="ui-flaky") for _ in range(2)]:
            client.wait(flaky.id, timeout=STATE_TIMEOUT)
    eu = cluster.region_pid("eu")
    os.kill(eu, signal.SIGSTOP)  # frozen: the master's Delegate calls to eu time out
    try:
        with cluster.client() as client:  # strict placement: its runs wait for eu
            task = client.submit("echo home again", name="ui-breaker", region="eu")
            spilled = client.submit("true", region="eu", placement=Placement.PREFER)
            expect(eu_card).to_have_attribute("data-breaker", "open", timeout=UI_TIMEOUT_MS)
            breaker = eu_card.locator('dd[data-figure="breaker"] .breaker')
            expect(breaker).to_contain_text("failures")
            expect(eu_card.locator("header")).to_contain_text("not answering")
            expect(us_card).to_have_attribute("data-breaker", "closed")
            spill = client.wait(spilled.id, timeout=STATE_TIMEOUT).latest_run
            assert spill is not None
            assert spill.region == "us"
            expect(eu_card.locator('dd[data-figure="spillover"]')).to_contain_text(
                "1 out", timeout=UI_TIMEOUT_MS
            )
            expect(us_card.locator('dd[data-figure="spillover"]')).to_contain_text("1 in")
            flaky = us_card.locator('.kinds li[data-kind="ui-flaky"] .breaker')
            expect(flaky).to_have_attribute("data-breaker", "open", timeout=UI_TIMEOUT_MS)
            save_screenshot(page, request, "open")
    finally:
        os.kill(eu, signal.SIGCONT)
    expect(eu_card).to_have_attribute("data-breaker", "closed", timeout=UI_TIMEOUT_MS)
    expect(eu_card.locator('dd[data-figure="breaker"] .breaker')).to_have_attribute(
        "data-breaker", "closed"
    )
    with cluster.client() as client:
        run = client.wait(task.id, timeout=STATE_TIMEOUT).latest_run
    assert run is not None
    assert (run.state, run.region) == (RunState.SUCCEEDED, "eu")
