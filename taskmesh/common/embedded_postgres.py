"""A private PostgreSQL server run from the system's binaries: the embedded ledger and test harness.

``EmbeddedPostgres.persistent(base_dir)`` keeps a durable cluster in ``<base_dir>/pgdata`` whose
password and port are kept beside it in ``ledger.json`` (mode 0600), so that a later process can
answer ``url()``. ``EmbeddedPostgres.throwaway()`` runs a fast, non-durable, trust-auth cluster in
a temporary directory that ``stop()`` removes. Both listen on 127.0.0.1 only, on a free port, with
their Unix socket in a private directory. Under root the server runs as the ``postgres`` system
user, because ``initdb`` and ``postgres`` refuse to run as root. Liveness is read from ``/proc``,
so this module is Linux only.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

from taskmesh.common.errors import EmbeddedPostgresError, PostgresNotFoundError

SYSTEM_BIN_GLOB = "/usr/lib/postgresql/*/bin"
REQUIRED_PROGRAMS = ("initdb", "pg_ctl", "postgres", "psql")
SERVICE_USER = "postgres"
SUPERUSER = "taskmesh"
LEDGER_DATABASE = "taskmesh"
MAINTENANCE_DATABASE = "postgres"
THROWAWAY_PREFIX = "taskmesh-pg-"
# RAM-backed: creating a database there is ~15 ms instead of ~250 ms on a virtual disk.
RAM_TEMP_DIR = Path("/dev/shm")
LISTEN_HOST = "127.0.0.1"
START_ATTEMPTS = 5
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
GONE_TIMEOUT_S = 10.0
# A throwaway dir without an owner file younger than this may still be being created.
ORPHAN_GRACE_S = 60.0
THROWAWAY_SETTINGS = ("fsync = off", "full_page_writes = off", "synchronous_commit = off")


def default_base_dir(env: Mapping[str, str], *, is_root: bool) -> Path:
    """``/var/lib/taskmesh`` for root, else ``$XDG_DATA_HOME/taskmesh`` (``~/.local/share``)."""
    if is_root:
        return Path("/var/lib/taskmesh")
    data_home = env.get("XDG_DATA_HOME", "")
    if not os.path.isabs(data_home):
        home = env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
        data_home = os.path.join(home, ".local", "share")
    return Path(data_home) / "taskmesh"


def default_throwaway_root() -> Path:
    """Where throwaway clusters go: ``/dev/shm`` if usable (RAM), else the system temp dir."""
    if RAM_TEMP_DIR.is_dir() and os.access(RAM_TEMP_DIR, os.W_OK | os.X_OK):
        return RAM_TEMP_DIR
    return Path(tempfile.gettempdir())


@dataclass(frozen=True)
class PostgresBinaries:
    """The directory holding one PostgreSQL installation's server programs."""

    bin_dir: Path

    def program(self, name: str) -> str:
        """The full path of one program, e.g. ``initdb``."""
        return str(self.bin_dir / name)


def default_bin_dirs(exec_path: Sequence[str] | None = None) -> list[Path]:
    """Debian's versioned bin dirs, highest version first, then the ``PATH`` entries."""
    versioned = sorted((Path(found) for found in glob.glob(SYSTEM_BIN_GLOB)), key=_version_key)
    path = os.get_exec_path() if exec_path is None else exec_path
    return versioned[::-1] + [Path(entry) for entry in path if entry]


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> ``(15,)``, for sorting versions numerically."""
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_binaries(search_dirs: Sequence[Path] | None = None) -> PostgresBinaries:
    """The first search dir holding every server program; ``PostgresNotFoundError`` if none."""
    for bin_dir in default_bin_dirs() if search_dirs is None else search_dirs:
        if all(os.access(bin_dir / name, os.X_OK) for name in REQUIRED_PROGRAMS):
            return PostgresBinaries(bin_dir)
    raise PostgresNotFoundError(
        f"No PostgreSQL server programs ({', '.join(REQUIRED_PROGRAMS)}) found in "
        f"{SYSTEM_BIN_GLOB} or on PATH. Install them (apt-get install postgresql), or use an "
        "existing server: set TASKMESH_DATABASE_URL or ledger.url in the topology."
    )


@dataclass(frozen=True)
class ServerAccount:
    """The OS account the server runs as: the ``postgres`` user under root, else the caller."""

    uid: int
    gid: int
    name: str

    @property
    def is_other(self) -> bool:
        """True when commands must switch to this account."""
        return self.uid != os.geteuid()

    def run(
        self, command: Sequence[str], stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run one command as this account, capturing its output."""
        switch = self.is_other
        return subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            cwd="/",
            user=self.uid if switch else None,
            group=self.gid if switch else None,
            extra_groups=[] if switch else None,
        )

    def give(self, path: Path) -> None:
        """Hand ``path`` to this account when it is not the current one."""
        if self.is_other:
            os.chown(path, self.uid, self.gid)

    def can_enter(self, directory: Path) -> bool:
        """True when this account may traverse ``directory`` (primary group only)."""
        info = directory.stat()
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


def server_account(service_user: str = SERVICE_USER) -> ServerAccount:
    """The account to run the server as: ``service_user`` when we are root, else ourselves."""
    uid = os.geteuid()
    if uid != 0:
        return ServerAccount(uid, os.getegid(), f"uid {uid}")
    try:
        entry = pwd.getpwnam(service_user)
    except KeyError:
        raise EmbeddedPostgresError(
            f"Running as root, but there is no '{service_user}' system user to run PostgreSQL as: "
            "install PostgreSQL (apt-get install postgresql) or run taskmesh as a normal user."
        ) from None
    return ServerAccount(entry.pw_uid, entry.pw_gid, service_user)


def _proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` from the state on; empty if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return text[text.rindex(")") + 2 :].split()


def process_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie (an init may never reap orphans)."""
    fields = _proc_stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot; empty if it does not exist."""
    fields = _proc_stat(pid)
    return fields[19] if len(fields) > 19 else ""


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Poll until the process is gone; False if it still runs after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a live postgres process working in ``data_dir``."""
    try:
        command = Path(f"/proc/{pid}/comm").read_text().strip()
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    return command == "postgres" and cwd == data_dir.resolve() and process_alive(pid)


def postmaster_pid(data_dir: Path) -> int | None:
    """The pid of the postmaster running on ``data_dir``; None when none runs there."""
    try:
        pid = int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _is_postmaster_of(pid, data_dir) else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LISTEN_HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class ClusterLayout:
    """Where one cluster keeps its files under its base directory."""

    base_dir: Path

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory."""
        return self.base_dir / "pgdata"

    @property
    def socket_dir(self) -> Path:
        """The private directory of the server's Unix socket."""
        return self.base_dir / "run"

    @property
    def log_file(self) -> Path:
        """The server log ``pg_ctl`` appends to."""
        return self.base_dir / "postgres.log"

    @property
    def state_file(self) -> Path:
        """User, password and port (mode 0600), for ``url()`` in any later process."""
        return self.base_dir / "ledger.json"

    @property
    def owner_file(self) -> Path:
        """Throwaway clusters only: pid and start time of the process that owns the cluster."""
        return self.base_dir / "owner"


@dataclass(frozen=True)
class ServerState:
    """What ``url()`` needs: the superuser, its password (None under trust auth) and the port."""

    user: str
    password: str | None
    port: int


def read_state(layout: ClusterLayout) -> ServerState | None:
    """The state kept beside the data dir, or None when there is none."""
    try:
        data = json.loads(layout.state_file.read_text())
        return ServerState(str(data["user"]), data["password"], int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_state(layout: ClusterLayout, state: ServerState) -> None:
    """Replace the state file atomically; only its owner may read it."""
    scratch = layout.state_file.with_suffix(".tmp")
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        os.fchmod(file.fileno(), 0o600)
        json.dump({"user": state.user, "password": state.password, "port": state.port}, file)
    os.replace(scratch, layout.state_file)


def remove_stale_throwaways(temp_root: Path) -> list[Path]:
    """Remove throwaway clusters whose owning process is gone, stopping their servers first."""
    removed = []
    for base_dir in sorted(temp_root.glob(f"{THROWAWAY_PREFIX}*")):
        layout = ClusterLayout(base_dir)
        if base_dir.is_dir() and _is_abandoned(layout):
            _dispose(layout)
            removed.append(base_dir)
    return removed


def _is_abandoned(layout: ClusterLayout) -> bool:
    """True when the process that created this throwaway cluster no longer exists."""
    try:
        pid, started = layout.owner_file.read_text().split()
        return _start_time(int(pid)) != started
    except (OSError, ValueError):
        return time.time() - layout.base_dir.stat().st_mtime > ORPHAN_GRACE_S


def _dispose(layout: ClusterLayout) -> None:
    """Stop an abandoned throwaway server immediately (SIGQUIT) and delete its directory."""
    pid = postmaster_pid(layout.data_dir)
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)
        wait_until_gone(pid, GONE_TIMEOUT_S)
    shutil.rmtree(layout.base_dir, ignore_errors=True)


def _failure(action: str, result: subprocess.CompletedProcess[str], log: str = "") -> str:
    """An error message for a failed server command, with the tail of its output and log."""
    output = "\n".join(part.strip() for part in (result.stderr, result.stdout, log) if part.strip())
    tail = "\n".join(output.splitlines()[-15:])
    return f"{action} failed (exit status {result.returncode}):\n{tail}"


def _read_from(path: Path, offset: int) -> str:
    """The text of ``path`` from byte ``offset`` on (empty when unreadable)."""
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read().decode(errors="replace")
    except OSError:
        return ""


def _quoted(value: str) -> str:
    """A single-quoted literal, as postgresql.conf and SQL both spell it."""
    return "'" + value.replace("'", "''") + "'"


class EmbeddedPostgres:
    """A private PostgreSQL server: ``start()`` returns its URL, ``stop()`` leaves no process."""

    def __init__(
        self, directory: Path, *, durable: bool, bin_dirs: Sequence[Path] | None = None
    ) -> None:
        """Prefer the ``persistent`` and ``throwaway`` constructors."""
        self._directory = directory.resolve()
        self._durable = durable
        self._bin_dirs = bin_dirs
        self._layout = ClusterLayout(self._directory) if durable else None

    @classmethod
    def persistent(cls, base_dir: Path, *, bin_dirs: Sequence[Path] | None = None) -> Self:
        """A durable, password-protected cluster in ``<base_dir>/pgdata`` outliving this process."""
        return cls(base_dir, durable=True, bin_dirs=bin_dirs)

    @classmethod
    def throwaway(
        cls, *, temp_root: Path | None = None, bin_dirs: Sequence[Path] | None = None
    ) -> Self:
        """A fast, non-durable, trust-auth cluster in a temporary directory removed on stop."""
        root = default_throwaway_root() if temp_root is None else temp_root
        return cls(root, durable=False, bin_dirs=bin_dirs)

    @cached_property
    def binaries(self) -> PostgresBinaries:
        """The PostgreSQL programs in use (looked up on first need)."""
        return find_binaries(self._bin_dirs)

    @cached_property
    def account(self) -> ServerAccount:
        """The OS account the server runs as."""
        return server_account()

    @property
    def layout(self) -> ClusterLayout:
        """The cluster's files; a throwaway cluster has none before ``start()``."""
        if self._layout is None:
            raise EmbeddedPostgresError("The throwaway PostgreSQL has not been started.")
        return self._layout

    @property
    def data_dir(self) -> Path:
        """The PostgreSQL data directory."""
        return self.layout.data_dir

    @property
    def database(self) -> str:
        """The database ``url()`` names by default."""
        return LEDGER_DATABASE if self._durable else MAINTENANCE_DATABASE

    def pid(self) -> int | None:
        """The postmaster's pid, or None when the server is not running."""
        return None if self._layout is None else postmaster_pid(self._layout.data_dir)

    def is_running(self) -> bool:
        """True when the server's postmaster is alive."""
        return self.pid() is not None

    def url(self, dbname: str | None = None) -> str:
        """``postgresql://USER[:PASSWORD]@127.0.0.1:PORT/DBNAME`` of the running server."""
        state = read_state(self.layout) if self.is_running() else None
        if state is None:
            where = self._directory if self._durable else "throwaway"
            raise EmbeddedPostgresError(
                f"The embedded PostgreSQL ({where}) is not running: start it (taskmesh db start)."
            )
        secret = "" if state.password is None else ":" + quote(state.password, safe="")
        credentials = quote(state.user, safe="") + secret
        return f"postgresql://{credentials}@{LISTEN_HOST}:{state.port}/{dbname or self.database}"

    def start(self) -> str:
        """Start the server (a no-op when it already runs) and return its URL."""
        if not self._durable:
            self._start_throwaway()
            return self.url()
        with self._start_lock():
            if not self.is_running():
                self._start_persistent(self.layout)
        return self.url()

    def stop(self) -> None:
        """Stop the server (fast, else immediate) and wait until its postmaster has exited."""
        pid = self.pid()
        if pid is not None:
            self._shut_down(self.layout, pid)
        if not self._durable and self._layout is not None:
            shutil.rmtree(self._layout.base_dir, ignore_errors=True)
            self._layout = None

    def halt(self) -> None:
        """Stop the server but keep its data and port, so ``resume`` brings it back as it was.

        For fault injection (a ledger outage) and maintenance; ``stop`` is the final stop.
        """
        pid = self.pid()
        if pid is not None:
            self._shut_down(self.layout, pid)

    def resume(self) -> str:
        """Start a halted server again on its saved port; returns its URL."""
        if not self.is_running():
            self._remove_stale_pidfile(self.layout)
            self._launch(self.layout)
        return self.url()

    def __enter__(self) -> Self:
        """Start the server."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    @contextlib.contextmanager
    def _start_lock(self) -> Iterator[None]:
        """Serialise concurrent starts of one persistent cluster."""
        # Under root the base dir stays root's (it holds the password file) but must be
        # traversable by the server account; otherwise it is private to the user.
        self._directory.mkdir(
            parents=True, exist_ok=True, mode=0o755 if self.account.is_other else 0o700
        )
        with (self._directory / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _start_persistent(self, layout: ClusterLayout) -> None:
        """Initialise the cluster on first use, then launch it and create the ledger database."""
        self._create_dirs(layout)
        if not (layout.data_dir / "PG_VERSION").exists():
            self._initdb(layout, secrets.token_urlsafe(24))
        elif read_state(layout) is None:
            raise EmbeddedPostgresError(
                f"{layout.state_file} is missing, so the ledger password is lost: restore it, "
                f"or delete {layout.data_dir} to start over with an empty ledger."
            )
        self._remove_stale_pidfile(layout)
        self._launch(layout)
        self._create_database(layout, LEDGER_DATABASE)

    def _start_throwaway(self) -> None:
        """Clean up after killed runs, then initialise and launch a fresh temporary cluster."""
        if self.is_running():
            return
        remove_stale_throwaways(self._directory)
        layout = ClusterLayout(Path(tempfile.mkdtemp(prefix=THROWAWAY_PREFIX, dir=self._directory)))
        pid = os.getpid()
        layout.owner_file.write_text(f"{pid} {_start_time(pid)}\n")
        self._layout = layout
        try:
            self.account.give(layout.base_dir)
            self._create_dirs(layout)
            self._initdb(layout, password=None)
            self._launch(layout)
        except BaseException:
            self.stop()
            raise

    def _create_dirs(self, layout: ClusterLayout) -> None:
        """Create the data and socket dirs and the log, owned by the server account."""
        for directory in (layout.data_dir, layout.socket_dir):
            directory.mkdir(exist_ok=True, mode=0o700)
        layout.log_file.touch(mode=0o600)
        for path in (layout.data_dir, layout.socket_dir, layout.log_file):
            self.account.give(path)
        self._check_reachable(layout.data_dir)

    def _check_reachable(self, path: Path) -> None:
        """Fail clearly when the server account cannot reach ``path`` (e.g. under /root)."""
        for directory in reversed(path.parents):
            if not self.account.can_enter(directory):
                mode = stat.filemode(directory.stat().st_mode)
                raise EmbeddedPostgresError(
                    f"The {self.account.name} user, which runs PostgreSQL, cannot enter "
                    f"{directory} ({mode}): choose a data directory it can reach, e.g. under "
                    "/var/lib or the system temp directory."
                )

    def _initdb(self, layout: ClusterLayout, password: str | None) -> None:
        """Create the cluster with its superuser, auth rules and listen settings."""
        command = [self.binaries.program("initdb"), "-D", str(layout.data_dir), "-U", SUPERUSER]
        command += ["-E", "UTF8", "--locale=C", "--no-instructions"]
        # Trust on the Unix socket is safe: its directory is private to the server account.
        auth = ["--auth=trust", "--no-sync"] if password is None else ["--auth-local=trust"]
        with self._password_file(layout, password) as password_file:
            if password_file is not None:
                auth += ["--auth-host=scram-sha-256", f"--pwfile={password_file}"]
            result = self.account.run(command + auth)
        if result.returncode != 0:
            raise EmbeddedPostgresError(_failure(f"initdb of {layout.data_dir}", result))
        self._append_settings(layout)
        write_state(layout, ServerState(SUPERUSER, password, port=0))

    @contextlib.contextmanager
    def _password_file(self, layout: ClusterLayout, password: str | None) -> Iterator[Path | None]:
        """A file holding ``password`` that only the server account can read, deleted after."""
        if password is None:
            yield None
            return
        path = layout.socket_dir / "initdb-password"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(password + "\n")
        self.account.give(path)
        try:
            yield path
        finally:
            path.unlink(missing_ok=True)

    def _append_settings(self, layout: ClusterLayout) -> None:
        """Listen on loopback only, keep the socket private, and drop durability if throwaway."""
        lines = [
            f"listen_addresses = {_quoted(LISTEN_HOST)}",
            f"unix_socket_directories = {_quoted(str(layout.socket_dir))}",
        ]
        lines += [] if self._durable else list(THROWAWAY_SETTINGS)
        with (layout.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Added by taskmesh\n" + "\n".join(lines) + "\n")

    def _remove_stale_pidfile(self, layout: ClusterLayout) -> None:
        """Delete a ``postmaster.pid`` left by a server that is gone (its pid may be reused)."""
        if postmaster_pid(layout.data_dir) is None:
            (layout.data_dir / "postmaster.pid").unlink(missing_ok=True)

    def _launch(self, layout: ClusterLayout) -> None:
        """Start on the saved port if any, else a free one; retry when a port was taken."""
        state = read_state(layout)
        if state is None:
            raise EmbeddedPostgresError(f"{layout.state_file} is missing or unreadable.")
        for attempt in range(START_ATTEMPTS):
            port = state.port if attempt == 0 and state.port else free_port()
            if self._pg_ctl_start(layout, port):
                write_state(layout, replace(state, port=port))
                return
        raise EmbeddedPostgresError(
            f"PostgreSQL found no free port on {LISTEN_HOST} in {START_ATTEMPTS} attempts."
        )

    def _pg_ctl_start(self, layout: ClusterLayout, port: int) -> bool:
        """Start and wait until ready; False when the port was taken meanwhile."""
        offset = layout.log_file.stat().st_size
        command = [self.binaries.program("pg_ctl"), "-D", str(layout.data_dir), "-l"]
        command += [str(layout.log_file), "-w", "-t", str(START_TIMEOUT_S), "-s"]
        result = self.account.run([*command, "-o", f"-p {port}", "start"])
        if result.returncode == 0:
            return True
        log = _read_from(layout.log_file, offset)
        if "Address already in use" in log:
            return False
        raise EmbeddedPostgresError(
            _failure(f"Starting PostgreSQL in {layout.data_dir}", result, log)
        )

    def _create_database(self, layout: ClusterLayout, name: str) -> None:
        """Create database ``name`` unless it exists (over the private socket)."""
        state = read_state(layout)
        port = str(state.port if state else 0)
        command = [self.binaries.program("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", str(layout.socket_dir), "-p", port, "-U", SUPERUSER]
        sql = (
            f"SELECT format('CREATE DATABASE %I', {_quoted(name)}) WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = {_quoted(name)})\\gexec\n"
        )
        result = self.account.run([*command, "-d", MAINTENANCE_DATABASE], stdin=sql)
        if result.returncode != 0:
            raise EmbeddedPostgresError(_failure(f"Creating database {name}", result))

    def _shut_down(self, layout: ClusterLayout, pid: int) -> None:
        """``pg_ctl stop`` in fast mode, then immediate mode, until the postmaster is gone."""
        for mode in ("fast", "immediate"):
            command = [self.binaries.program("pg_ctl"), "-D", str(layout.data_dir), "-m", mode]
            self.account.run([*command, "-w", "-t", str(STOP_TIMEOUT_S), "-s", "stop"])
            if wait_until_gone(pid, GONE_TIMEOUT_S):
                return
        raise EmbeddedPostgresError(
            f"PostgreSQL (pid {pid}) in {layout.data_dir} did not stop; stop it with kill {pid}."
        )
