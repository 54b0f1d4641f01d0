"""The master's HTTP side: the classic ``/schedule`` + ``/status`` contract byte for byte, and /v1.

No region is reachable here (the topology's addresses are port 0), so the master claims nothing;
tests move runs through their states with the ledger itself, at chosen instants.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import aiohttp
import pytest
from test_master_harness import RunningMaster, make_topology
from test_master_harness import running_master as serve

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RunState, Transition

INVALID_DATE = b"Invalid date format. Use ISO 8601 format."
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
Y2030 = 1_893_456_000  # 2030-01-01T00:00:00Z


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


def exact_json(value: dict[str, Any]) -> bytes:
    """The bytes the master answers ``value`` with."""
    return json.dumps(value).encode()


async def schedule(http: aiohttp.ClientSession, body: Any) -> tuple[int, bytes]:
    """POST /schedule with a JSON body; status and raw body."""
    async with http.post("/schedule", json=body) as response:
        return response.status, await response.read()


# --- POST /schedule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduled_at",
    [
        "2030-01-01T00:00:00Z",
        "2030-01-01T00:00:00+00:00",
        "2030-01-01T01:00:00+01:00",
        "2030-01-01T00:00:00",
        "2030-01-01 00:00:00",
        "2030-01-01T00:00:00.000Z",
    ],
)
async def test_schedule_answers_command_unix_seconds_and_task_id(
    http: aiohttp.ClientSession, ledger: Ledger, scheduled_at: str
) -> None:
    """200 with exactly command, scheduled_at (integer seconds, naive = UTC) and task_id."""
    async with http.post(
        "/schedule", json={"command": "echo hi", "scheduled_at": scheduled_at}
    ) as response:
        raw = await response.read()
        assert response.status == 200
        assert response.content_type == "application/json"
    task_id = json.loads(raw)["task_id"]
    assert raw == exact_json({"command": "echo hi", "scheduled_at": Y2030, "task_id": task_id})
    task = await ledger.get_task(UUID(task_id))
    run = await ledger.latest_run(task.id)
    assert run is not None
    assert run.due_at == datetime(2030, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        {"command": "echo hi", "scheduled_at": "tomorrow"},
        {"command": "echo hi", "scheduled_at": ""},
        {"command": "echo hi", "scheduled_at": "2030-13-01T00:00:00Z"},
        {"command": "echo hi", "scheduled_at": 1893456000},
        {"command": "echo hi", "scheduled_at": None},
        {"command": "echo hi"},
    ],
)
async def test_schedule_refuses_a_bad_or_missing_date_exactly(
    http: aiohttp.ClientSession, ledger: Ledger, body: dict[str, Any]
) -> None:
    """400 with the classic message as the whole body; nothing written."""
    assert await schedule(http, body) == (400, INVALID_DATE)
    assert await ledger.list_tasks() == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"text"'])
async def test_schedule_refuses_bad_json(
    http: aiohttp.ClientSession, ledger: Ledger, raw: bytes
) -> None:
    """400 for a body that is not a JSON object."""
    async with http.post("/schedule", data=raw) as response:
        assert response.status == 400
    assert await ledger.list_tasks() == []


@pytest.mark.parametrize("command", ["", "   ", None, 42])
async def test_schedule_refuses_a_missing_command(
    http: aiohttp.ClientSession, ledger: Ledger, command: object
) -> None:
    """400 for an empty or missing command."""
    status, _ = await schedule(http, {"command": command, "scheduled_at": "2030-01-01T00:00:00Z"})
    assert status == 400
    assert await ledger.list_tasks() == []


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/schedule"), ("PUT", "/schedule"), ("DELETE", "/schedule"), ("POST", "/status")],
)
async def test_other_methods_are_not_allowed(
    http: aiohttp.ClientSession, method: str, path: str
) -> None:
    """405 on the classic paths for methods they do not serve."""
    async with http.request(method, path) as response:
        assert response.status == 405


# --- GET /status ------------------------------------------------------------------------------


async def test_status_leaves_out_what_has_not_happened(http: aiohttp.ClientSession) -> None:
    """A waiting task shows only its id, command and scheduled_at, on both paths."""
    _, raw = await schedule(http, {"command": "echo later", "scheduled_at": "2030-01-01T00:00:00Z"})
    task_id = json.loads(raw)["task_id"]
    expected = exact_json({"task_id": task_id, "command": "echo later", "scheduled_at": Y2030})
    for path in ("/status", "/status/"):
        async with http.get(path, params={"task_id": task_id}) as response:
            assert response.status == 200
            assert await response.read() == expected


async def test_status_shows_the_timeline_of_a_succeeded_run(
    http: aiohttp.ClientSession, ledger: Ledger
) -> None:
    """picked_at, started_at and completed_at appear as they happen; no failed_at."""
    task_id, due = await _schedule_due(http)
    await _drive(ledger, task_id, due, RunState.SUCCEEDED)
    body = await _status(http, task_id)
    assert body == {
        "task_id": task_id,
        "command": "echo now",
        "scheduled_at": _unix(due),
        "picked_at": _unix(due) + 1,
        "started_at": _unix(due) + 3,
        "completed_at": _unix(due) + 4,
    }


@pytest.mark.parametrize("final", [RunState.FAILED, RunState.TIMED_OUT])
async def test_status_shows_failed_at_for_a_run_that_failed(
    http: aiohttp.ClientSession, ledger: Ledger, final: RunState
) -> None:
    """A run that ended without success has failed_at and no completed_at."""
    task_id, due = await _schedule_due(http)
    await _drive(ledger, task_id, due, final)
    body = await _status(http, task_id)
    assert body["failed_at"] == _unix(due) + 4
    assert "completed_at" not in body
    assert list(body) == [
        "task_id",
        "command",
        "scheduled_at",
        "picked_at",
        "started_at",
        "failed_at",
    ]


@pytest.mark.parametrize(
    ("query", "status"),
    [({}, 400), ({"task_id": ""}, 400), ({"task_id": "42"}, 404), ({"task_id": UNKNOWN_ID}, 404)],
)
async def test_status_errors(
    http: aiohttp.ClientSession, query: dict[str, str], status: int
) -> None:
    """A missing task_id is 400; a malformed or unknown one 404."""
    async with http.get("/status", params=query) as response:
        assert response.status == status


async def _schedule_due(http: aiohttp.ClientSession) -> tuple[str, datetime]:
    """Schedule ``echo now`` a minute ago (whole seconds); its id and due time."""
    due = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    _, raw = await schedule(http, {"command": "echo now", "scheduled_at": due.isoformat()})
    return json.loads(raw)["task_id"], due


async def _drive(ledger: Ledger, task_id: str, due: datetime, final: RunState) -> None:
    """Claim the task's run at due+1s, assign +2s, start +3s, end in ``final`` at +4s."""
    (claimed,) = await ledger.claim_due_runs({"eu": 1}, due + timedelta(seconds=1))
    assert str(claimed.task_id) == task_id
    steps = [(RunState.ASSIGNED, 2), (RunState.RUNNING, 3), (final, 4)]
    for target, offset in steps:
        at = due + timedelta(seconds=offset)
        transition = Transition(claimed.run_id, claimed.epoch, target, at, worker_id="w1")
        (outcome,) = await ledger.record_transitions([transition])
        assert outcome.applied, outcome


async def _status(http: aiohttp.ClientSession, task_id: str) -> dict[str, Any]:
    """GET /status of a task."""
    async with http.get("/status", params={"task_id": task_id}) as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


def _unix(instant: datetime) -> int:
    """Whole Unix seconds."""
    return int(instant.timestamp())


# --- /v1 --------------------------------------------------------------------------------------


INVALID_TASKS: list[tuple[Any, str]] = [
    ({"command": ""}, "command"),
    ({"command": "x", "priority": 5000}, "priority"),
    ({"command": "x", "priority": "high"}, "priority"),
    ({"command": "x", "region": "mars"}, "region"),
    ({"command": "x", "schedule": {"cron": {"expression": "bad"}}}, "schedule.cron.expression"),
    (
        {"command": "x", "schedule": {"cron": {"expression": "* * * * *", "timezone": "No/Where"}}},
        "schedule.cron.timezone",
    ),
    ({"command": "x", "schedule": {"at": {}}}, "schedule.at.at"),
    ({"command": "x", "schedule": {"at": {"at": "soon"}}}, "schedule"),
    ({"command": "x", "timeout": "-5s"}, "timeout"),
    ({"command": "x", "executor": "teleport"}, "executor"),
    ({"command": "x", "placement": "prefer"}, "placement"),
    ({"command": "x", "region": "eu", "placement": "anywhere"}, "placement"),
    ({"command": "x", "colour": "blue"}, "colour"),
    ({"command": "x", "dependencies": [UNKNOWN_ID]}, "dependencies"),
    ([{"command": "x"}], "body"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_TASKS)
async def test_v1_submit_refuses_invalid_tasks_naming_the_field(
    http: aiohttp.ClientSession, ledger: Ledger, body: Any, field: str
) -> None:
    """400 ``{"error": {"field", "message"}}``; nothing written."""
    async with http.post("/v1/tasks", json=body) as response:
        assert response.status == 400
        error = (await response.json())["error"]
    assert error["field"] == field, error
    assert error["message"]
    assert await ledger.list_tasks() == []


async def test_v1_placement_defaults_to_strict_and_takes_prefer(
    http: aiohttp.ClientSession,
) -> None:
    """No placement: strict; ``"prefer"`` (short or long enum name) is kept."""
    placements = []
    for extra in ({}, {"placement": "prefer"}, {"placement": "PLACEMENT_PREFER"}):
        body = {"command": "true", "region": "eu", **extra}
        async with http.post("/v1/tasks", json=body) as response:
            assert response.status == 201
            placements.append((await response.json())["task"]["spec"]["placement"])
    assert placements == ["PLACEMENT_STRICT", "PLACEMENT_PREFER", "PLACEMENT_PREFER"]


async def test_v1_submit_get_list_priority_cancel(http: aiohttp.ClientSession) -> None:
    """A task's life over REST: 201, dedupe 200, get, list, reprioritise, cancel, 409."""
    body = {
        "command": "prog",
        "executor": "exec",
        "args": ["-v"],
        "region": "eu",
        "idempotency_key": "k1",
        "timeout": "30s",
    }
    async with http.post("/v1/tasks", json=body) as response:
        assert response.status == 201
        created = await response.json()
    task_id = created["task"]["id"]
    assert created["task"]["spec"]["executor"] == "EXECUTOR_EXEC"
    assert created["first_run"]["state"] == "RUN_STATE_PENDING"
    async with http.post("/v1/tasks", json=body) as response:
        assert response.status == 200
        assert (await response.json())["deduplicated"] is True
    async with http.get(f"/v1/tasks/{task_id}") as response:
        assert [run["id"] for run in (await response.json())["runs"]] == [
            created["first_run"]["id"]
        ]
    async with http.get("/v1/tasks", params={"state": "pending", "region": "eu"}) as response:
        assert [s["task"]["id"] for s in (await response.json())["tasks"]] == [task_id]
    async with http.post(f"/v1/tasks/{task_id}/priority", json={"priority": 10}) as response:
        assert (await response.json())["run_ids"] == [created["first_run"]["id"]]
    async with http.post(f"/v1/tasks/{task_id}/cancel") as response:
        assert (await response.json())["cancelled_run_ids"] == [created["first_run"]["id"]]
    async with http.post(f"/v1/tasks/{task_id}/cancel", json={"reason": "again"}) as response:
        assert response.status == 409
        assert (await response.json())["error"]["field"] is None


V1_ERRORS: list[tuple[str, str, Any, int, str | None]] = [
    ("GET", f"/v1/tasks/{UNKNOWN_ID}", None, 404, None),
    ("GET", "/v1/tasks/not-an-id", None, 404, None),
    ("GET", "/v1/tasks?state=bogus", None, 400, "state"),
    ("GET", "/v1/tasks?limit=many", None, 400, "limit"),
    ("POST", f"/v1/tasks/{UNKNOWN_ID}/priority", {"priority": "x"}, 400, "priority"),
    ("POST", f"/v1/tasks/{UNKNOWN_ID}/priority", {"priority": 5000}, 400, "priority"),
    ("POST", f"/v1/tasks/{UNKNOWN_ID}/priority", {"priority": 1}, 404, None),
    ("POST", f"/v1/tasks/{UNKNOWN_ID}/cancel", None, 404, None),
    ("POST", f"/v1/tasks/{UNKNOWN_ID}/pause", None, 404, None),
    ("POST", f"/v1/tasks/{UNKNOWN_ID}/resume", None, 404, None),
    ("GET", "/v1/schedules?next=1000", None, 400, "next"),
    ("GET", "/v1/schedules?next=soon", None, 400, "next"),
]


@pytest.mark.parametrize("case", V1_ERRORS, ids=[f"{m} {p} {s}" for m, p, _, s, _ in V1_ERRORS])
async def test_v1_errors(
    http: aiohttp.ClientSession, case: tuple[str, str, Any, int, str | None]
) -> None:
    """Errors are JSON with the mapped status and the field when there is one."""
    method, path, body, status, field = case
    async with http.request(method, path, json=body) as response:
        assert response.status == status
        assert (await response.json())["error"]["field"] == field


async def test_v1_pause_resume_and_schedules(http: aiohttp.ClientSession) -> None:
    """Pause and resume a cron task over REST; /v1/schedules shows it with its next fires."""
    body = {"name": "nightly", "command": "true", "schedule": {"cron": {"expression": "0 3 * * *"}}}
    async with http.post("/v1/tasks", json=body) as response:
        task_id = (await response.json())["task"]["id"]
    async with http.get("/v1/schedules", params={"next": "2"}) as response:
        (listed,) = (await response.json())["schedules"]
    assert listed["task"]["id"] == task_id
    assert len(listed["next_fires"]) == 2
    assert all(fire.endswith("T03:00:00Z") for fire in listed["next_fires"])
    async with http.post(f"/v1/tasks/{task_id}/pause") as response:
        assert response.status == 200
        assert (await response.json())["task"]["paused"] is True
    async with http.get("/v1/schedules") as response:
        (listed,) = (await response.json())["schedules"]
    assert listed["task"]["paused"] is True
    assert "next_fires" not in listed  # none while paused
    async with http.post(f"/v1/tasks/{task_id}/resume") as response:
        assert "paused" not in (await response.json())["task"]  # proto3 JSON leaves out false
    async with http.post("/v1/tasks", json={"command": "true"}) as response:
        once = (await response.json())["task"]["id"]
    async with http.post(f"/v1/tasks/{once}/pause") as response:
        assert response.status == 409
        assert "no cron or interval schedule" in (await response.json())["error"]["message"]


async def test_health_probes(http: aiohttp.ClientSession) -> None:
    """/healthz and /readyz answer 200 while serving; /readyz shows each component."""
    for path in ("/healthz", "/readyz"):
        async with http.get(path) as response:
            assert response.status == 200
    async with http.get("/readyz") as response:
        body = await response.json()
    assert (body["daemon"], body["ready"], body["failing"]) == ("master", True, [])
    assert body["components"]["phase"] == {"ok": True, "phase": "serving"}
    assert body["components"]["ledger"] == {"ok": True}
    assert body["components"]["regions"]["ok"] is True
