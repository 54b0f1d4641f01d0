"""The embedded PostgreSQL against the real server binaries, and the ``taskmesh db`` command."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from taskmesh.cli import main
from taskmesh.common.embedded_postgres import (
    EmbeddedPostgres,
    default_bin_dirs,
    find_binaries,
    postmaster_pid,
    process_alive,
    remove_stale_throwaways,
)
from taskmesh.common.errors import PostgresNotFoundError

THROWAWAY_OWNER = """
import sys, time
from pathlib import Path
from taskmesh.common.embedded_postgres import EmbeddedPostgres
print(EmbeddedPostgres.throwaway(temp_root=Path(sys.argv[1])).start(), flush=True)
time.sleep(600)
"""


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A scratch directory the ``postgres`` user can enter (pytest's tmp_path is root-only)."""
    root = Path(tempfile.mkdtemp(prefix="taskmesh-test-"))
    root.chmod(0o755)
    yield root
    remove_stale_throwaways(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def base_dir(reachable_dir: Path) -> Iterator[Path]:
    """The base directory of a new persistent cluster, stopped after the test."""
    base = reachable_dir / "ledger"
    yield base
    EmbeddedPostgres.persistent(base).stop()


@pytest.fixture(scope="module")
def shared_base_dir() -> Iterator[Path]:
    """One persistent cluster's base directory for the tests that need not see an initdb."""
    root = Path(tempfile.mkdtemp(prefix="taskmesh-test-"))
    root.chmod(0o755)
    base = root / "ledger"
    yield base
    EmbeddedPostgres.persistent(base).stop()
    shutil.rmtree(root, ignore_errors=True)


def query(url: str, sql: str) -> list[asyncpg.Record]:
    """Run one query on a new connection."""

    async def fetch() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            return list(await connection.fetch(sql))
        finally:
            await connection.close()

    return asyncio.run(fetch())


def pids_working_in(directory: Path) -> list[int]:
    """Live processes whose working directory is ``directory`` (a postmaster and its children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = Path(os.readlink(entry / "cwd"))
            except OSError:
                continue
            if cwd == directory.resolve() and process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_persistent_restart_reuses_data_dir_and_url(base_dir: Path) -> None:
    url = EmbeddedPostgres.persistent(base_dir).start()
    assert (base_dir / "pgdata" / "PG_VERSION").is_file()
    query(url, "CREATE TABLE kept (id int)")
    EmbeddedPostgres.persistent(base_dir).stop()

    again = EmbeddedPostgres.persistent(base_dir)
    assert again.start() == url
    assert query(url, "SELECT count(*) AS n FROM kept")[0]["n"] == 0
    assert url.startswith("postgresql://taskmesh:")
    assert "@127.0.0.1:" in url
    assert url.endswith("/taskmesh")
    assert stat.S_IMODE((base_dir / "ledger.json").stat().st_mode) == 0o600


def test_persistent_server_requires_its_password(shared_base_dir: Path) -> None:
    url = EmbeddedPostgres.persistent(shared_base_dir).start()
    password = url.split("@")[0].rsplit(":", 1)[1]

    assert query(url, "SELECT 1 AS one")[0]["one"] == 1
    with pytest.raises(asyncpg.InvalidPasswordError):
        query(url.replace(f":{password}@", "@"), "SELECT 1")
    with pytest.raises(asyncpg.InvalidPasswordError):
        query(url.replace(f":{password}@", ":wrong@"), "SELECT 1")


def test_start_when_running_is_a_no_op(shared_base_dir: Path) -> None:
    first = EmbeddedPostgres.persistent(shared_base_dir)
    url = first.start()
    pid = first.pid()

    second = EmbeddedPostgres.persistent(shared_base_dir)
    assert second.start() == url
    assert second.pid() == pid
    assert (
        EmbeddedPostgres.persistent(shared_base_dir).url("other")
        == url.rsplit("/", 1)[0] + "/other"
    )


def test_stop_leaves_no_process(shared_base_dir: Path) -> None:
    server = EmbeddedPostgres.persistent(shared_base_dir)
    server.start()
    pid = server.pid()
    assert pid is not None
    assert pid in pids_working_in(server.data_dir)

    server.stop()

    assert not process_alive(pid)
    assert pids_working_in(server.data_dir) == []
    assert not server.is_running()
    server.stop()  # stopping a stopped server is a no-op


@pytest.mark.parametrize("stale_pid", [dead_pid, os.getpid], ids=["dead", "reused-by-other"])
def test_stale_postmaster_pid_is_cleaned(
    shared_base_dir: Path, stale_pid: Callable[[], int]
) -> None:
    server = EmbeddedPostgres.persistent(shared_base_dir)
    url = server.start()
    server.stop()
    pid_file = server.data_dir / "postmaster.pid"
    pid_file.write_text(f"{stale_pid()}\n{server.data_dir}\n")

    assert not server.is_running()
    assert server.start() == url
    assert postmaster_pid(server.data_dir) == server.pid() != stale_pid()


def test_start_moves_off_a_port_taken_meanwhile(shared_base_dir: Path) -> None:
    server = EmbeddedPostgres.persistent(shared_base_dir)
    old_url = server.start()
    server.stop()
    port = int(old_url.rsplit(":", 1)[1].split("/")[0])

    with socket.create_server(("127.0.0.1", port)):
        new_url = server.start()

    assert new_url != old_url
    assert query(new_url, "SELECT 1 AS one")[0]["one"] == 1
    assert EmbeddedPostgres.persistent(shared_base_dir).url() == new_url


def test_missing_binaries_raise_postgres_not_found(tmp_path: Path, reachable_dir: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()

    with pytest.raises(PostgresNotFoundError, match="apt-get install postgresql") as raised:
        EmbeddedPostgres.throwaway(temp_root=reachable_dir, bin_dirs=[empty]).start()
    assert "TASKMESH_DATABASE_URL" in str(raised.value)
    assert "ledger.url" in str(raised.value)
    assert list(reachable_dir.iterdir()) == []  # the half-made cluster was removed
    with pytest.raises(PostgresNotFoundError):
        find_binaries([])


def test_binaries_are_searched_in_order(tmp_path: Path) -> None:
    partial, complete = tmp_path / "partial", tmp_path / "complete"
    for directory, programs in ((partial, ["initdb"]), (complete, ["initdb", "pg_ctl"])):
        directory.mkdir()
        for name in [*programs, "postgres", "psql"]:
            (directory / name).write_text("#!/bin/sh\n")
            (directory / name).chmod(0o755)

    assert find_binaries([partial, complete]).bin_dir == complete
    search = default_bin_dirs(["/opt/elsewhere"])
    assert search[-1] == Path("/opt/elsewhere")
    assert search[0].match("/usr/lib/postgresql/*/bin")


def test_throwaway_server_is_not_durable(postgres_server: EmbeddedPostgres) -> None:
    settings = {
        row["name"]: row["setting"]
        for row in query(
            postgres_server.url(),
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'full_page_writes',"
            " 'synchronous_commit', 'listen_addresses', 'unix_socket_directories')",
        )
    }

    assert settings["fsync"] == settings["full_page_writes"] == "off"
    assert settings["synchronous_commit"] == "off"
    assert settings["listen_addresses"] == "127.0.0.1"
    assert Path(settings["unix_socket_directories"]).parent == postgres_server.layout.base_dir


def test_throwaway_directory_is_removed_on_stop(reachable_dir: Path) -> None:
    with EmbeddedPostgres.throwaway(temp_root=reachable_dir) as server:
        base, pid = server.layout.base_dir, server.pid()
        assert base.name.startswith("taskmesh-pg-")
        assert pid is not None

    assert not base.exists()
    assert not process_alive(pid)


def test_throwaway_of_a_killed_run_is_cleaned_up(reachable_dir: Path) -> None:
    with EmbeddedPostgres.throwaway(temp_root=reachable_dir) as live:
        owner = subprocess.Popen(
            [sys.executable, "-c", THROWAWAY_OWNER, str(reachable_dir)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert owner.stdout is not None
        assert owner.stdout.readline().startswith("postgresql://")
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        (orphan,) = [path for path in reachable_dir.iterdir() if path != live.layout.base_dir]
        orphan_pid = postmaster_pid(orphan / "pgdata")
        assert orphan_pid is not None  # the server outlived its killed owner

        assert remove_stale_throwaways(reachable_dir) == [orphan]

        assert not orphan.exists()
        assert not process_alive(orphan_pid)
        assert live.is_running()


@pytest.mark.parametrize("round_number", [1, 2])
def test_empty_database_is_fresh_for_each_test(empty_database_url: str, round_number: int) -> None:
    tables = "SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'"
    assert query(empty_database_url, tables)[0]["n"] == 0
    query(empty_database_url, f"CREATE TABLE probe_{round_number} (id int)")


def test_db_start_upgrade_url_twice_in_a_row(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(base_dir)]
    urls = []
    for _ in range(2):
        assert main(["db", "start", *where], env={}) == 0
        started = capsys.readouterr().out.strip()
        assert main(["db", "upgrade", *where], env={}) == 0
        assert main(["db", "url", *where], env={}) == 0
        assert capsys.readouterr().out.strip().splitlines()[-1] == started
        assert query(started, "SELECT version_num FROM alembic_version")
        assert main(["db", "stop", *where], env={}) == 0
        assert capsys.readouterr().out.startswith("Stopped the embedded PostgreSQL")
        urls.append(started)

    assert urls[0] == urls[1]


def test_db_stop_leaves_no_process(
    shared_base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    where = ["--data-dir", str(shared_base_dir)]
    assert main(["db", "start", *where], env={}) == 0
    pid = postmaster_pid(shared_base_dir / "pgdata")
    assert pid is not None

    assert main(["db", "stop", *where], env={}) == 0

    assert not process_alive(pid)
    assert pids_working_in(shared_base_dir / "pgdata") == []
    capsys.readouterr()
    assert main(["db", "url", *where], env={}) == 1
    assert "not running" in capsys.readouterr().err


@pytest.mark.parametrize("via", ["flag", "environment"])
def test_db_upgrade_prefers_an_explicit_url(
    base_dir: Path, empty_database_url: str, via: str
) -> None:
    argv = ["db", "upgrade", "--data-dir", str(base_dir)]
    if via == "flag":
        assert main([*argv, "--url", empty_database_url], env={}) == 0
    else:
        assert main(argv, env={"TASKMESH_DATABASE_URL": empty_database_url}) == 0

    assert query(empty_database_url, "SELECT version_num FROM alembic_version")
    assert not (base_dir / "pgdata").exists()  # the embedded server was not needed


@pytest.mark.parametrize("round_number", [1, 2])
def test_database_url_is_a_fresh_migrated_copy(database_url: str, round_number: int) -> None:
    assert query(database_url, "SELECT version_num FROM alembic_version")
    leftovers = "SELECT count(*) AS n FROM pg_tables WHERE tablename LIKE 'probe_%'"
    assert query(database_url, leftovers)[0]["n"] == 0
    query(database_url, f"CREATE TABLE probe_{round_number} (id int)")
