"""A secured cluster end to end: bearer tokens, mutual TLS, the executor policy, size limits.

One `taskmesh up` (master, region eu, one worker) with every security key of the topology on:
``master.auth.tokens_file``, ``tls`` on master, region and workers (a CA made here with the
``openssl`` command), and a worker policy (shell only, a command allow-list, ``run_as: nobody``,
``env: [PATH]``, a 1000-byte output cap). Everything is driven through the public interfaces:
the Python client, raw gRPC stubs, REST, the CLI and a real browser.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_harness import RunningCluster, make_certificates, running_cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc
from playwright.sync_api import Page, expect

from taskmesh.client import Client
from taskmesh.common import model
from taskmesh.common.errors import TooLargeError, UnauthenticatedError, ValidationError
from taskmesh.common.rpc import region_pb2, region_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc
from taskmesh.common.rpc.limits import MAX_MESSAGE_BYTES

TOKEN = "e2e-operator-token-4f1c9a"
PG_PASSWORD = "pg-s3cret-never-for-workers"
WAIT = 90.0
UI_TIMEOUT_MS = 60_000
POLICY = "regions.eu.workers.policy"


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tokens file, the cluster's certificates and an untrusted pair."""
    base = tmp_path_factory.mktemp("secrets")
    tokens = base / "tokens"
    tokens.write_text(f"# operators of the e2e cluster\n{TOKEN}\n")
    return {
        "tokens": tokens,
        "tls": make_certificates(base, "cluster"),
        "rogue": make_certificates(base, "rogue"),
    }


@pytest.fixture(scope="module")
def ledger_urls() -> list[str]:
    """The URL of the module cluster's ledger, once ``cluster`` made it."""
    return []


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    database_admin: Any,
    template_database: str,
    secrets: dict[str, Any],
    ledger_urls: list[str],
) -> Iterator[RunningCluster]:
    """The secured cluster; overrides conftest's, so ``browser``/``page`` use this one."""
    tls = secrets["tls"]
    policy = {
        "executors": ["shell"],
        "commands": [r"echo [a-z ]*", r"seq [0-9 ]+", r"id -u", r"env", r"sleep [0-9.]+"],
        "run_as": "nobody",
        "env": ["PATH"],
        "output_limit": 1000,
    }
    workers = {"count": 1, "slots": 4, "heartbeat_interval": "250ms", "tls": tls, "policy": policy}

    def topology(ledger_url: str) -> dict[str, Any]:
        ledger_urls.append(ledger_url)
        return {
            "ledger": {"url": ledger_url},
            "master": {
                "dispatch_interval": "200ms",
                "auth": {"tokens_file": str(secrets["tokens"])},
                "tls": tls,
            },
            "regions": [
                {"name": "eu", "worker_heartbeat_timeout": "2s", "tls": tls, "workers": workers}
            ],
        }

    # Credentials in the supervisor's environment must not reach the workers either; the
    # ledger URL is also in the topology file `taskmesh up` reads.
    extra_env = {"PGPASSWORD": PG_PASSWORD}
    base = tmp_path_factory.mktemp("secure-cluster")
    with running_cluster(base, database_admin, template_database, topology, extra_env) as running:
        yield running


def finished(client: Client, task_id: object) -> model.Run:
    info = client.wait(str(task_id), timeout=WAIT)
    assert info.latest_run is not None
    return info.latest_run


def http(
    url: str, *, method: str = "GET", body: bytes | None = None, token: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


# --- bearer tokens ---------------------------------------------------------------------------


def test_grpc_refuses_a_missing_or_wrong_token_and_serves_the_right_one(
    cluster: RunningCluster,
) -> None:
    with cluster.client() as anonymous, pytest.raises(UnauthenticatedError) as missing:
        anonymous.list()
    assert "requires a bearer token" in str(missing.value)
    with cluster.client("not-the-token") as wrong, pytest.raises(UnauthenticatedError) as bad:
        wrong.submit("echo never")
    assert "not valid" in str(bad.value)

    with grpc.insecure_channel(cluster.master) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.ListTasks(scheduler_pb2.ListTasksRequest(), timeout=10)
        assert raw.value.code() is grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        # The standard health service stays open for probes.
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING

    with cluster.client(TOKEN) as client:
        task = client.submit("echo hello secure", name="secure-hello")
        run = finished(client, task.id)
    assert run.state is model.RunState.SUCCEEDED
    assert run.output_tail == "hello secure\n"


def test_rest_answers_401_without_a_token_except_the_probes(cluster: RunningCluster) -> None:
    rest = cluster.rest
    schedule = json.dumps({"command": "echo x", "scheduled_at": "2030-01-01T00:00:00Z"}).encode()
    guarded = [
        ("GET", "/v1/tasks", None),
        ("POST", "/v1/tasks", b'{"command": "echo x"}'),
        ("POST", "/schedule", schedule),
        ("GET", "/status?task_id=00000000-0000-0000-0000-000000000000", None),
        ("GET", "/v1/cluster", None),
        ("GET", "/v1/events/stream", None),
        ("POST", "/v1/session", None),
    ]
    for method, path, body in guarded:
        status, headers, answer = http(rest + path, method=method, body=body)
        assert status == 401, (path, status)
        assert headers["WWW-Authenticate"].startswith("Bearer"), path
        assert "bearer token" in json.loads(answer)["error"]["message"], path
        assert http(rest + path, method=method, body=body, token="wrong")[0] == 401, path
    for path in ("/healthz", "/readyz", "/", "/dashboard/static/main.js"):
        assert http(rest + path)[0] == 200, path

    status, _, answer = http(rest + "/schedule", method="POST", body=schedule, token=TOKEN)
    assert status == 200, answer
    task_id = json.loads(answer)["task_id"]
    assert http(f"{rest}/status?task_id={task_id}", token=TOKEN)[0] == 200
    assert http(rest + "/v1/tasks", token=TOKEN)[0] == 200


def test_cli_reads_the_token_file_from_its_option_or_the_environment(
    cluster: RunningCluster, secrets: dict[str, Any]
) -> None:
    def taskmesh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return cluster.cli(*args, check=False, env=env)

    refused = taskmesh("list")
    assert refused.returncode == 1
    assert "requires a bearer token" in refused.stderr
    assert "Traceback" not in refused.stderr
    submitted = taskmesh(
        "submit", "--command", "echo via cli", "--token-file", str(secrets["tokens"])
    )
    assert submitted.returncode == 0, submitted.stderr
    listed = taskmesh("list", env={"TASKMESH_TOKEN_FILE": str(secrets["tokens"])})
    assert listed.returncode == 0, listed.stderr
    assert submitted.stdout.strip() in listed.stdout


def test_dashboard_logs_in_with_a_token_and_follows_events_live(
    page: Page, cluster: RunningCluster
) -> None:
    page.goto(cluster.rest)
    login = page.locator("#login")
    expect(login).to_be_visible(timeout=UI_TIMEOUT_MS)
    login.locator("input[name=token]").fill(TOKEN)
    login.locator("button[type=submit]").click()
    expect(login).to_be_hidden()
    expect(page.locator("#live-status")).to_have_text("live", timeout=UI_TIMEOUT_MS)
    assert page.evaluate("sessionStorage.getItem('taskmesh.token')") == TOKEN
    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    assert cookies["taskmesh_events"]["httpOnly"] is True
    with cluster.client(TOKEN) as client:
        task = client.submit("echo from the secure dashboard", name="secure-dashboard")
    row = page.locator(f'#runs-table tr[data-task-id="{task.id}"]')
    expect(row).to_have_attribute("data-state", "succeeded", timeout=UI_TIMEOUT_MS)


# --- mutual TLS ------------------------------------------------------------------------------


def describe_region(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    """The region's name from Describe, over plaintext when ``credentials`` is None."""
    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    with channel:
        stub = region_pb2_grpc.RegionStub(channel)
        return stub.Describe(region_pb2.DescribeRequest(), timeout=5).status.name


def credentials(pair: dict[str, str], ca: dict[str, str]) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca["ca"]).read_bytes(),
        private_key=Path(pair["key"]).read_bytes(),
        certificate_chain=Path(pair["cert"]).read_bytes(),
    )


def test_regions_serve_only_clients_with_a_certificate_from_their_ca(
    cluster: RunningCluster, secrets: dict[str, Any]
) -> None:
    region = str(cluster.state["regions"]["eu"]["grpc"])
    trusted, rogue = secrets["tls"], secrets["rogue"]
    assert describe_region(region, credentials(trusted, trusted)) == "eu"
    refusals = {
        "plaintext": None,
        "no client certificate": grpc.ssl_channel_credentials(
            root_certificates=Path(trusted["ca"]).read_bytes()
        ),
        "a certificate from another CA": credentials(rogue, trusted),
    }
    for what, refused in refusals.items():
        with pytest.raises(grpc.RpcError) as caught:
            describe_region(region, refused)
        assert caught.value.code() is grpc.StatusCode.UNAVAILABLE, what  # type: ignore[attr-defined]


# --- the executor policy ---------------------------------------------------------------------


def test_a_command_outside_the_allow_list_fails_unexecuted_naming_the_rule(
    cluster: RunningCluster,
) -> None:
    with cluster.client(TOKEN) as client:
        task = client.submit("touch /tmp/taskmesh-policy-breach", region="eu")
        run = finished(client, task.id)
    assert run.state is model.RunState.FAILED
    assert run.error.startswith(f"not started: refused by {POLICY}.commands: ")
    assert run.exit_code is None
    assert run.attempt == 1  # recorded at once, not requeued to be refused again
    assert not Path("/tmp/taskmesh-policy-breach").exists()


def test_commands_run_as_the_policy_user_with_only_the_allowed_variables(
    cluster: RunningCluster,
) -> None:
    with cluster.client(TOKEN) as client:
        uid = finished(client, client.submit("id -u", region="eu").id)
        env = finished(client, client.submit("env", region="eu").id)
    assert uid.output_tail.strip() == "65534"  # nobody
    names = sorted(line.split("=", 1)[0] for line in env.output_tail.splitlines())
    assert set(names) <= {"PATH", "PWD", "SHLVL", "_"}  # the shell adds PWD, SHLVL and _
    assert "PATH" in names


def test_output_beyond_the_cap_is_dropped_and_marked(cluster: RunningCluster) -> None:
    with cluster.client(TOKEN) as client:
        run = finished(client, client.submit("seq 1 100000", region="eu").id)
    assert run.state is model.RunState.SUCCEEDED
    marker, tail = run.output_tail.split("\n", 1)
    assert marker.startswith("[taskmesh: output truncated, ")
    assert marker.endswith("the worker keeps the last 1000 bytes]")
    assert len(tail.encode()) == 1000
    assert tail.endswith("99999\n100000\n")


# --- size limits -----------------------------------------------------------------------------


def test_requests_over_the_size_limits_are_refused_naming_the_field(
    cluster: RunningCluster,
) -> None:
    huge = "x" * (MAX_MESSAGE_BYTES + 1024)
    status, _, answer = http(
        cluster.rest + "/v1/tasks",
        method="POST",
        body=json.dumps({"command": huge}).encode(),
        token=TOKEN,
    )
    assert status == 413
    error = json.loads(answer)["error"]
    assert error["field"] == "body"
    assert f"at most {MAX_MESSAGE_BYTES} bytes" in error["message"]

    # A client sending past the limit: the master's gRPC server refuses the message.
    options = [("grpc.max_send_message_length", 4 * MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(cluster.master, options=options) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        request = scheduler_pb2.SubmitRequest(spec={"name": "huge", "command": huge})
        with pytest.raises(grpc.RpcError) as caught:
            stub.Submit(request, timeout=30, metadata=(("authorization", f"Bearer {TOKEN}"),))
        assert caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]

    with cluster.client(TOKEN) as client:
        with pytest.raises(TooLargeError) as too_large:
            client.submit(huge)
        assert too_large.value.field == "request"
        with pytest.raises(ValidationError) as long_command:
            client.submit("echo " + "y" * 70_000)
        assert long_command.value.field == "command"


# --- workers hold no database credentials ----------------------------------------------------


def test_workers_get_no_database_url_or_password(
    cluster: RunningCluster, ledger_urls: list[str]
) -> None:
    (database_url,) = ledger_urls
    pid = cluster.worker_pid("worker-eu-1")
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    topology = Path(argv[argv.index("--topology") + 1]).read_text()
    for where, text in (("environment", "\n".join(environ)), ("argv", " ".join(argv))):
        assert database_url not in text, where
        assert PG_PASSWORD not in text, where
        assert "postgresql://" not in text, where
    assert not any(entry.startswith(("TASKMESH_DATABASE_URL=", "PG")) for entry in environ)
    assert database_url not in topology
    assert "postgresql://" not in topology
    # ... while the master did get them (the check above is not vacuous).
    master = Path(f"/proc/{cluster.state['master']['pid']}/environ").read_bytes().decode()
    assert f"PGPASSWORD={PG_PASSWORD}" in master


def test_ledger_url_stays_out_of_process_listings(
    cluster: RunningCluster, ledger_urls: list[str]
) -> None:
    """Master and regions get the ledger URL through their environment, never their argv."""
    (database_url,) = ledger_urls
    pids = {"master": int(cluster.state["master"]["pid"])}
    pids |= {name: cluster.region_pid(name) for name in cluster.state["regions"]}
    for name, pid in pids.items():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        assert "--database-url" not in argv, name
        assert "postgresql://" not in " ".join(argv), name
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0")
        assert f"TASKMESH_DATABASE_URL={database_url}" in environ, name
