"""The dashboard's HTTP side on a real master: the page, ``/v1/cluster``, and the SSE framing.

No region is reachable here (the topology's addresses are port 0), so submitted runs stay
``pending``: enough to see their creation events on the stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from test_master_harness import RunningMaster, make_topology
from test_master_harness import running_master as serve

from taskmesh.common.ledger import Ledger

READ_TIMEOUT = 15.0


@pytest.fixture
async def served(ledger: Ledger) -> AsyncIterator[RunningMaster]:
    """A master with no reachable region."""
    async with serve(make_topology(), ledger) as running:
        yield running


@pytest.fixture
async def http(served: RunningMaster) -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client of the master."""
    async with aiohttp.ClientSession(served.http) as session:
        yield session


async def submit(http: aiohttp.ClientSession, name: str) -> str:
    """Submit a task over REST; its id."""
    async with http.post("/v1/tasks", json={"name": name, "command": "true"}) as response:
        assert response.status == 201
        return str((await response.json())["task"]["id"])


async def next_message(stream: aiohttp.StreamReader) -> list[str]:
    """The lines of the next SSE block (up to a blank line)."""
    lines: list[str] = []
    while True:
        line = await asyncio.wait_for(stream.readline(), READ_TIMEOUT)
        assert line, "the stream ended"
        text = line.decode().rstrip("\n")
        if not text:
            return lines
        lines.append(text)


async def next_batch(stream: aiohttp.StreamReader) -> tuple[int, list[dict[str, Any]]]:
    """The id and events of the next ``runs`` message, skipping keep-alive comments."""
    while True:
        lines = await next_message(stream)
        if all(line.startswith(":") for line in lines):
            continue
        fields = dict(line.split(": ", 1) for line in lines)
        assert set(fields) == {"id", "event", "data"}, lines
        assert fields["event"] == "runs"
        return int(fields["id"]), json.loads(fields["data"])["events"]


async def test_page_and_its_modules_are_served(http: aiohttp.ClientSession) -> None:
    async with http.get("/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert 'src="dashboard/static/main.js"' in page
    assets = {"main.js": "javascript", "runs.js": "javascript", "dashboard.css": "text/css"}
    for asset, content_type in assets.items():
        async with http.get(f"/dashboard/static/{asset}") as response:
            assert response.status == 200, asset
            assert content_type in response.content_type  # browsers refuse other module types


async def get_json(http: aiohttp.ClientSession, path: str, **params: str) -> Any:
    """GET ``path``; the JSON body of a 200 answer."""
    async with http.get(path, params=params) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_cluster_lists_topology_regions_and_exact_run_states(
    http: aiohttp.ClientSession,
) -> None:
    await submit(http, "counted")
    cancelled = await submit(http, "cancelled")
    async with http.post(f"/v1/tasks/{cancelled}/cancel") as response:
        assert response.status == 200
    overview = await get_json(http, "/v1/cluster")
    assert [region["name"] for region in overview["regions"]] == ["eu", "us"]
    assert all(region.get("reachable", False) is False for region in overview["regions"])
    assert overview["run_states"] == {"cancelled": 1, "pending": 1}
    assert overview["observed_at"].endswith("Z")


async def test_activity_has_ninety_ten_second_slices(http: aiohttp.ClientSession) -> None:
    activity = await get_json(http, "/v1/activity")
    assert (activity["step_seconds"], activity["window_seconds"]) == (10, 900)
    buckets = activity["buckets"]
    assert len(buckets) == 90
    assert all(b["finished"] == 0 and b["pickup_p50"] is None for b in buckets)
    assert buckets[0]["start"] < buckets[-1]["start"] <= activity["observed_at"]


async def test_retry_over_rest_requeues_and_refuses_an_active_task(
    http: aiohttp.ClientSession,
) -> None:
    task_id = await submit(http, "retried")
    async with http.post(f"/v1/tasks/{task_id}/cancel") as response:
        assert response.status == 200
    async with http.post(f"/v1/tasks/{task_id}/retry") as response:
        assert response.status == 200
        body = await response.json()
    assert (body["run"]["attempt"], body["run"]["state"]) == (2, "RUN_STATE_PENDING")
    async with http.post(f"/v1/tasks/{task_id}/retry") as response:
        assert response.status == 409
        assert "still active" in (await response.json())["error"]["message"]
    async with http.post("/v1/tasks/not-a-task/retry") as response:
        assert response.status == 404


async def test_workflows_list_and_graph(http: aiohttp.ClientSession) -> None:
    body = {
        "name": "pipeline",
        "tasks": [
            {"local_name": "a", "name": "a", "command": "true"},
            {"local_name": "b", "name": "b", "command": "true", "depends_on": ["a"]},
        ],
    }
    async with http.post("/v1/workflows", json=body) as response:
        assert response.status == 201, await response.text()
        submitted = await response.json()
    workflow_id, ids = submitted["workflow_id"], submitted["task_ids"]
    listed = await get_json(http, "/v1/workflows")
    assert [(w["id"], w["name"], w["task_count"]) for w in listed["workflows"]] == [
        (workflow_id, "pipeline", 2)
    ]
    graph = await get_json(http, f"/v1/workflows/{workflow_id}")
    assert graph["workflow"]["name"] == "pipeline"
    states = {t["task"]["spec"]["name"]: t["latest_run"]["state"] for t in graph["tasks"]}
    assert states == {"a": "RUN_STATE_PENDING", "b": "RUN_STATE_BLOCKED"}
    assert graph["edges"] == [{"from": ids["a"], "to": ids["b"]}]
    async with http.get("/v1/workflows/00000000-0000-4000-8000-000000000000") as response:
        assert response.status == 404


async def test_task_list_filters_kind_search_and_since(http: aiohttp.ClientSession) -> None:
    async with http.post("/v1/tasks", json={"name": "Nightly", "command": "true", "kind": "batch"}):
        pass
    await submit(http, "other")
    names = lambda body: [t["task"]["spec"]["name"] for t in body["tasks"]]  # noqa: E731
    assert names(await get_json(http, "/v1/tasks", kind="batch")) == ["Nightly"]
    assert names(await get_json(http, "/v1/tasks", search="nigh")) == ["Nightly"]
    assert names(await get_json(http, "/v1/tasks", since="2999-01-01T00:00:00Z")) == []
    async with http.get("/v1/tasks", params={"since": "yesterday"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["field"] == "since"


async def test_task_events_list_its_transitions_oldest_first(http: aiohttp.ClientSession) -> None:
    task_id = await submit(http, "logged")
    async with http.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "not needed"}):
        pass
    events = (await get_json(http, f"/v1/tasks/{task_id}/events"))["events"]
    assert [(e.get("from_state"), e["to_state"]) for e in events] == [
        (None, "RUN_STATE_PENDING"),
        ("RUN_STATE_PENDING", "RUN_STATE_CANCELLED"),
    ]
    assert {e["task_id"] for e in events} == {task_id}
    assert events[0]["at"] <= events[1]["at"]
    newest = (await get_json(http, f"/v1/tasks/{task_id}/events", limit="1"))["events"]
    assert [e["to_state"] for e in newest] == ["RUN_STATE_CANCELLED"]
    async with http.get("/v1/tasks/00000000-0000-4000-8000-000000000000/events") as response:
        assert response.status == 404
    async with http.get(f"/v1/tasks/{task_id}/events", params={"limit": "5000"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["field"] == "limit"


async def test_stream_frames_each_batch_with_its_last_event_id(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/v1/events/stream") as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert await next_message(response.content) == ["retry: 2000"]
        task_id = await submit(http, "streamed")
        last_id, events = await next_batch(response.content)
    assert [event["task_id"] for event in events] == [task_id]
    assert events[0]["to_state"] == "RUN_STATE_PENDING"
    assert int(events[-1]["id"]) == last_id


async def test_stream_resumes_after_last_event_id_and_filters(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/v1/events/stream") as response:
        await next_message(response.content)
        await submit(http, "first")
        first_id, _ = await next_batch(response.content)
    second, third = await submit(http, "second"), await submit(http, "third")
    resume = {"Last-Event-ID": str(first_id)}  # what a reconnecting EventSource sends
    async with http.get("/v1/events/stream", headers=resume) as response:
        await next_message(response.content)
        _, events = await next_batch(response.content)
    assert [event["task_id"] for event in events] == [second, third]
    only_third = {"task_id": third}
    async with http.get("/v1/events/stream", headers=resume, params=only_third) as response:
        await next_message(response.content)
        _, events = await next_batch(response.content)
    assert [event["task_id"] for event in events] == [third]


async def test_stream_rejects_a_bad_cursor(http: aiohttp.ClientSession) -> None:
    async with http.get("/v1/events/stream", params={"after_id": "soon"}) as response:
        assert response.status == 400
        assert (await response.json())["error"]["field"] == "after_id"


async def test_master_shutdown_ends_open_streams(ledger: Ledger) -> None:
    async with (
        serve(make_topology(), ledger) as running,
        aiohttp.ClientSession(running.http) as session,
        session.get("/v1/events/stream") as response,
    ):
        await next_message(response.content)
        running.master.stop()
        rest = await asyncio.wait_for(response.content.read(), READ_TIMEOUT)
    assert rest in {b"", b": keep-alive\n\n"}
