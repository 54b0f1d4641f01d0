"""The shape of ``topology.yaml``, as TypedDicts kept apart from the runtime dataclasses.

These describe what an operator writes (every key optional except a region's ``name``;
durations as text or seconds, addresses as ``host:port`` text). The parser takes each mapping's
known keys from here, so adding a key means adding it here and reading it in ``parser.py``.
"""

from __future__ import annotations

from typing import Required, TypedDict

Duration = str | int | float  # "250ms", "2s", "5m", "1h", "1m30s" or seconds


class BreakerFile(TypedDict, total=False):
    """``{fail_max: 5, reset_timeout: 30s}``."""

    fail_max: int
    reset_timeout: Duration


class RetryFile(TypedDict, total=False):
    """``{attempts: 5, initial_backoff: 100ms, max_backoff: 5s}``."""

    attempts: int
    initial_backoff: Duration
    max_backoff: Duration


class LedgerFile(TypedDict, total=False):
    """The ``ledger`` section."""

    url: str | None
    data_dir: str | None


class TlsFile(TypedDict, total=False):
    """``{ca: ca.pem, cert: node.pem, key: node.key}``; paths relative to the topology file."""

    ca: str
    cert: str
    key: str


class AuthFile(TypedDict, total=False):
    """The master's ``auth`` section."""

    tokens_file: str | None


class PolicyFile(TypedDict, total=False):
    """A worker pool's ``policy`` section."""

    executors: list[str]
    commands: list[str]
    run_as: str | None
    env: list[str] | None
    output_limit: int


class MasterFile(TypedDict, total=False):
    """The ``master`` section."""

    grpc: str
    http: str
    dispatch_interval: Duration
    region_heartbeat_timeout: Duration
    max_pending_runs: int
    shutdown_timeout: Duration
    breaker: BreakerFile
    delegation_retry: RetryFile
    auth: AuthFile
    tls: TlsFile | None


class RegionBreakersFile(TypedDict, total=False):
    """A region's ``breakers`` section."""

    worker: BreakerFile
    kind: BreakerFile


class WorkersFile(TypedDict, total=False):
    """A region's ``workers`` section."""

    count: int
    slots: int
    labels: dict[str, str]
    heartbeat_interval: Duration
    http: str
    shutdown_timeout: Duration
    tls: TlsFile | None
    policy: PolicyFile


class AutoscalingFile(TypedDict, total=False):
    """A region's ``autoscaling`` section (``command`` is required)."""

    min_workers: int
    max_workers: int
    target_per_slot: int | float
    cooldown: Duration
    interval: Duration
    command: Required[str]
    command_timeout: Duration


class RegionFile(TypedDict, total=False):
    """One entry of ``regions``."""

    name: Required[str]
    grpc: str
    http: str
    capacity: int
    age_step: Duration
    heartbeat_interval: Duration
    worker_heartbeat_timeout: Duration
    lost_run_retries: int
    shutdown_timeout: Duration
    fallbacks: list[str]
    breakers: RegionBreakersFile
    workers: WorkersFile
    autoscaling: AutoscalingFile
    tls: TlsFile | None


class TopologyFile(TypedDict, total=False):
    """The whole file."""

    ledger: LedgerFile
    master: MasterFile
    regions: list[RegionFile]


def known_keys(shape: type) -> tuple[str, ...]:
    """The keys a TypedDict allows, in the order it declares them (the order of the docs)."""
    return tuple(shape.__annotations__)
