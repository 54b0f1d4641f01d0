"""The runtime topology: frozen dataclasses, built once from the file and passed down.

The defaults here are the defaults of the file: a key left out of ``topology.yaml`` takes the
value written on its field below. Durations are ``timedelta``; addresses are ``Address``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit, urlunsplit

from taskmesh.common.errors import NotFoundError
from taskmesh.common.model import Executor

LOOPBACK = "127.0.0.1"
DEFAULT_OUTPUT_LIMIT = 64 * 1024  # bytes of a command's output a worker keeps (the tail)
MAX_OUTPUT_LIMIT = 512 * 1024  # results travel in gRPC messages; keep tails well below them


@dataclass(frozen=True, slots=True)
class Address:
    """A ``host:port`` to listen on or dial; port 0 asks the OS for a free port at bind time."""

    host: str
    port: int

    def __str__(self) -> str:
        """``host:port``, or ``[host]:port`` for IPv6: the form gRPC and the file both use."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def picks_free_port(self) -> bool:
        """True when the port is 0, to be chosen by the OS when the daemon binds."""
        return self.port == 0

    def with_port(self, port: int) -> Address:
        """The same host with another port, e.g. the one actually bound."""
        return replace(self, port=port)


def _loopback() -> Address:
    return Address(LOOPBACK, 0)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """A pybreaker circuit breaker: opens after ``fail_max`` failures, half-opens after a pause."""

    fail_max: int = 5
    reset_timeout: timedelta = timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """Exponential backoff (doubling from ``initial_backoff``, capped) for ``attempts`` tries."""

    attempts: int = 5
    initial_backoff: timedelta = timedelta(milliseconds=100)
    max_backoff: timedelta = timedelta(seconds=5)


@dataclass(frozen=True, slots=True)
class LedgerConfig:
    """Where the PostgreSQL ledger is: ``url``, or the embedded server when ``url`` is None."""

    url: str | None = None  # the file's ledger.url, overridden by TASKMESH_DATABASE_URL
    data_dir: Path | None = None  # the embedded server's base directory; None lets it choose

    @property
    def embedded(self) -> bool:
        """True when taskmesh should start its own PostgreSQL server."""
        return self.url is None

    @property
    def redacted_url(self) -> str | None:
        """``url`` with any password replaced by ``***``, fit for logs."""
        if self.url is None:
            return None
        parts = urlsplit(self.url)
        userinfo, at, host_port = parts.netloc.rpartition("@")
        if not at or ":" not in userinfo:
            return self.url
        user = userinfo.partition(":")[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host_port}"))

    def __repr__(self) -> str:
        return f"LedgerConfig(url={self.redacted_url!r}, data_dir={self.data_dir!r})"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """Mutual TLS of one daemon: the CA its peers' certificates must chain to, its own pair."""

    ca: Path
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """Bearer-token authentication of the master's client API (gRPC and REST)."""

    tokens_file: Path | None = None  # one token per line, ``#`` comments; None: auth off

    @property
    def enabled(self) -> bool:
        """True when clients must present a token."""
        return self.tokens_file is not None


@dataclass(frozen=True, slots=True)
class ExecutorPolicy:
    """What the workers of one pool agree to run, as whom, with which environment."""

    executors: tuple[Executor, ...] = tuple(Executor)  # executors a run may use
    commands: tuple[str, ...] = ()  # regexes, one must match the whole command; () allows any
    run_as: str | None = None  # user to run commands as (the worker must be root to switch)
    env: tuple[str, ...] | None = None  # variables passed on; None passes the worker's whole env
    output_limit: int = DEFAULT_OUTPUT_LIMIT  # bytes of output kept; older bytes are dropped


@dataclass(frozen=True, slots=True)
class MasterConfig:
    """The master daemon: its listeners, dispatch loop, admission control and region guards."""

    grpc: Address = field(default_factory=_loopback)
    http: Address = field(default_factory=_loopback)
    dispatch_interval: timedelta = timedelta(milliseconds=200)
    region_heartbeat_timeout: timedelta = timedelta(seconds=10)
    max_pending_runs: int = 100_000
    shutdown_timeout: timedelta = timedelta(seconds=30)
    breaker: BreakerConfig = field(default_factory=BreakerConfig)  # one per region
    delegation_retry: RetryConfig = field(default_factory=RetryConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    tls: TlsConfig | None = None  # the client certificate the master dials regions with


@dataclass(frozen=True, slots=True)
class RegionBreakers:
    """The breakers a region keeps: one per worker and one per task kind."""

    worker: BreakerConfig = field(
        default_factory=lambda: BreakerConfig(fail_max=3, reset_timeout=timedelta(seconds=30))
    )
    kind: BreakerConfig = field(
        default_factory=lambda: BreakerConfig(fail_max=5, reset_timeout=timedelta(seconds=60))
    )


@dataclass(frozen=True, slots=True)
class WorkerPoolConfig:
    """The workers of one region: ``count`` processes with ``slots`` concurrent runs each."""

    count: int = 1
    slots: int = 4
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    heartbeat_interval: timedelta = timedelta(seconds=1)
    http: Address = field(default_factory=_loopback)  # worker i listens on port + i
    shutdown_timeout: timedelta = timedelta(seconds=30)
    tls: TlsConfig | None = None  # the client certificate workers dial their region with
    policy: ExecutorPolicy = field(default_factory=ExecutorPolicy)

    def http_address(self, index: int) -> Address:
        """The HTTP address of worker ``index`` (0-based) of this pool."""
        if not 0 <= index < self.count:
            raise IndexError(f"worker index {index} out of range for a pool of {self.count}")
        return (
            self.http if self.http.picks_free_port else self.http.with_port(self.http.port + index)
        )


@dataclass(frozen=True, slots=True)
class AutoscalingConfig:
    """Sizing a region's worker pool to its load, through an operator's command.

    The region wants ``ceil((queued + running) / (slots per worker * target_per_slot))``
    workers, within ``min_workers``..``max_workers``, and runs ``command`` (an argv template with
    ``{region}``, ``{desired}``, ``{current}``, ``{address}``) when that number changes, at most
    once per ``cooldown``.
    """

    command: tuple[str, ...]
    min_workers: int = 1
    max_workers: int = 10
    target_per_slot: float = 1.0  # queued + running runs per worker slot the pool aims at
    cooldown: timedelta = timedelta(seconds=60)  # at least this long between two commands
    interval: timedelta = timedelta(seconds=5)  # how often the load is looked at
    command_timeout: timedelta = timedelta(seconds=60)  # then the command is killed

    def desired_workers(self, load: int, slots_per_worker: int) -> int:
        """How many workers ``load`` runs (queued + running) call for, within the bounds."""
        per_worker = slots_per_worker * self.target_per_slot
        wanted = math.ceil(load / per_worker) if load > 0 else 0
        return max(self.min_workers, min(self.max_workers, wanted))


@dataclass(frozen=True, slots=True)
class RegionConfig:
    """One regional scheduler: its listeners, queue, heartbeats, spillover and worker pool."""

    name: str
    grpc: Address = field(default_factory=_loopback)
    http: Address = field(default_factory=_loopback)
    capacity: int = 1000
    age_step: timedelta = timedelta(seconds=30)
    heartbeat_interval: timedelta = timedelta(seconds=1)
    worker_heartbeat_timeout: timedelta = timedelta(seconds=5)
    lost_run_retries: int = 3
    shutdown_timeout: timedelta = timedelta(seconds=30)
    fallbacks: tuple[str, ...] = ()
    breakers: RegionBreakers = field(default_factory=RegionBreakers)
    workers: WorkerPoolConfig = field(default_factory=WorkerPoolConfig)
    autoscaling: AutoscalingConfig | None = None  # None: the pool is sized by hand
    tls: TlsConfig | None = None  # when set, the gRPC listener requires client certificates


@dataclass(frozen=True, slots=True)
class Topology:
    """The whole cluster, as parsed from one topology file."""

    regions: tuple[RegionConfig, ...]
    master: MasterConfig = field(default_factory=MasterConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    source: str = field(default="", compare=False)  # the file it came from, for messages

    @property
    def region_names(self) -> tuple[str, ...]:
        """The region names in file order."""
        return tuple(region.name for region in self.regions)

    def region(self, name: str) -> RegionConfig:
        """The region called ``name``; ``NotFoundError`` if the topology has none."""
        for region in self.regions:
            if region.name == name:
                return region
        known = ", ".join(self.region_names)
        raise NotFoundError(f'unknown region "{name}" (the topology has: {known})')
