"""taskmesh installed from a built wheel, away from the checkout: what the Docker image runs.

The wheel is built from a copy of the sources and installed into a fresh venv with uv; the
commands then run with a working directory outside the repository, so nothing can be found in
the checkout by accident. The ledger migrations (the repo's ``db/``) must ship inside the wheel.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from taskmesh.common.ledger import migrations

REPOSITORY = Path(__file__).resolve().parents[2]
SOURCES = ("setup.py", "setup.cfg", "pyproject.toml", "README.md", "taskmesh", "db")
TIMEOUT = 300  # seconds: a cold uv cache downloads the dependencies


def uv() -> str:
    """The uv that `make venv` installs beside the test interpreter, else one on PATH."""
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv not found: `make venv` installs it")
    return found


def run(argv: list[str], cwd: Path) -> str:
    """Run a command to completion; its stdout, or a failure with everything it printed."""
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    env.pop("TASKMESH_DATABASE_URL", None)
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin/ directory of a venv holding taskmesh from a freshly built wheel."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        origin = REPOSITORY / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    python = ["--python", sys.executable]
    build = [uv(), "build", "--wheel", "--no-build-isolation", *python, "--out-dir", "dist"]
    run([*build, "-q"], cwd=source)
    (wheel,) = (source / "dist").glob("taskmesh-*.whl")
    run([uv(), "venv", "-q", *python, str(base / "venv")], cwd=base)
    venv_python = str(base / "venv" / "bin" / "python")
    run([uv(), "pip", "install", "-q", "--python", venv_python, str(wheel)], cwd=base)
    return base / "venv" / "bin"


def test_the_wheel_carries_migrations_and_dashboard(installed: Path) -> None:
    """Imported from the venv, not the checkout, with the files the package reads at run time."""
    probe = (
        "import importlib.resources as r, taskmesh; "
        "print(taskmesh.__file__); "
        "print(r.files('taskmesh.migrations') / 'env.py'); "
        "print(r.files('taskmesh.master.dashboard') / 'static' / 'index.html')"
    )
    lines = run([str(installed / "python"), "-c", probe], cwd=installed).split()
    venv = installed.parent
    for line in lines:
        path = Path(line)
        assert path.is_relative_to(venv), path
        assert path.is_file(), path


def test_the_wheel_carries_every_dashboard_asset(installed: Path) -> None:
    """Each file of the checkout's dashboard ``static/`` is in the installed package."""
    probe = (
        "import importlib.resources as r; "
        "print(*sorted(p.name for p in (r.files('taskmesh.master.dashboard') / 'static')"
        ".iterdir()))"
    )
    shipped = run([str(installed / "python"), "-c", probe], cwd=installed).split()
    static = REPOSITORY / "taskmesh" / "master" / "dashboard" / "static"
    assert shipped == sorted(path.name for path in static.iterdir() if path.is_file())


def test_db_upgrade_from_the_installed_wheel(installed: Path, empty_database_url: str) -> None:
    """``taskmesh db upgrade`` of the installed wheel migrates an empty ledger to head."""
    output = run(
        [str(installed / "taskmesh"), "db", "upgrade", "--url", empty_database_url], cwd=installed
    )
    assert "revision head" in output
    revision = asyncio.run(migrations.current_revision(empty_database_url))
    assert revision == migrations.head_revision()
