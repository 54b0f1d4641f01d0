"""From the file's data (already loaded YAML) to a ``Topology``, with every problem reported."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from taskmesh.common.errors import ConfigError
from taskmesh.common.topology import values
from taskmesh.common.topology.autoscaling import read_autoscaling
from taskmesh.common.topology.checks import (
    DurationField,
    check_addresses_unique,
    check_fallbacks,
    check_order,
)
from taskmesh.common.topology.config import (
    BreakerConfig,
    LedgerConfig,
    MasterConfig,
    RegionBreakers,
    RegionConfig,
    RetryConfig,
    Topology,
    WorkerPoolConfig,
)
from taskmesh.common.topology.schema import (
    AuthFile,
    BreakerFile,
    LedgerFile,
    MasterFile,
    RegionBreakersFile,
    RegionFile,
    RetryFile,
    TopologyFile,
    WorkersFile,
)
from taskmesh.common.topology.sections import Section, join
from taskmesh.common.topology.security import read_auth, read_policy, read_tls

DATABASE_URL_VARIABLE = "TASKMESH_DATABASE_URL"

_NO_ENVIRONMENT: Mapping[str, str] = MappingProxyType({})


def parse_topology(
    data: object,
    source: str = "",
    *,
    environ: Mapping[str, str] = _NO_ENVIRONMENT,
    base_dir: Path | None = None,
) -> Topology:
    """Validate loaded topology data (a dict); ``ConfigError`` lists every problem found.

    ``environ`` is consulted for ``TASKMESH_DATABASE_URL`` only (none by default); a relative
    ``ledger.data_dir`` is taken relative to ``base_dir`` when given.
    """
    problems: list[str] = []
    topology = read_topology(data, problems, environ=environ, base_dir=base_dir)
    if problems:
        raise ConfigError(problems, source)
    return replace(topology, source=source)


def read_topology(
    data: object, problems: list[str], *, environ: Mapping[str, str], base_dir: Path | None
) -> Topology:
    """Build the topology from ``data``, appending each problem to ``problems``."""
    root = Section.open(
        data, "", TopologyFile, problems, "a mapping with keys ledger, master, regions"
    )
    ledger = _read_ledger(root.section("ledger", LedgerFile), environ, base_dir)
    master_section = root.section("master", MasterFile)
    master = _read_master(master_section, base_dir)
    regions = _read_regions(root, master_section, master, base_dir)
    check_addresses_unique(master, regions, problems)
    return Topology(regions=tuple(region for _, region in regions), master=master, ledger=ledger)


def _read_ledger(
    section: Section, environ: Mapping[str, str], base_dir: Path | None
) -> LedgerConfig:
    url = section.value("url", values.optional(values.database_url), None)
    from_environment = environ.get(DATABASE_URL_VARIABLE, "")
    if from_environment:
        try:
            url = values.database_url(from_environment)
        except values.InvalidValue as problem:
            section.problems.append(f"{DATABASE_URL_VARIABLE} (environment variable): {problem}")
    data_dir = section.value("data_dir", values.optional(values.string), None)
    path = None if data_dir is None else Path(data_dir)
    if path is not None and base_dir is not None and not path.is_absolute():
        path = base_dir / path
    return LedgerConfig(url=url, data_dir=path)


def _read_breaker(section: Section, default: BreakerConfig) -> BreakerConfig:
    return BreakerConfig(
        fail_max=section.value("fail_max", values.positive_int, default.fail_max),
        reset_timeout=section.value(
            "reset_timeout", values.positive_duration, default.reset_timeout
        ),
    )


def _read_retry(section: Section) -> RetryConfig:
    default = RetryConfig()
    duration = values.positive_duration
    retry = RetryConfig(
        attempts=section.value("attempts", values.positive_int, default.attempts),
        initial_backoff=section.value("initial_backoff", duration, default.initial_backoff),
        max_backoff=section.value("max_backoff", duration, default.max_backoff),
    )
    check_order(
        DurationField(section, "initial_backoff", retry.initial_backoff),
        DurationField(section, "max_backoff", retry.max_backoff),
        strict=False,
    )
    return retry


def _read_master(section: Section, base_dir: Path | None) -> MasterConfig:
    default = MasterConfig()
    duration = values.positive_duration
    return MasterConfig(
        grpc=section.value("grpc", values.address, default.grpc),
        http=section.value("http", values.address, default.http),
        dispatch_interval=section.value("dispatch_interval", duration, default.dispatch_interval),
        region_heartbeat_timeout=section.value(
            "region_heartbeat_timeout", duration, default.region_heartbeat_timeout
        ),
        max_pending_runs=section.value(
            "max_pending_runs", values.positive_int, default.max_pending_runs
        ),
        shutdown_timeout=section.value("shutdown_timeout", duration, default.shutdown_timeout),
        breaker=_read_breaker(section.section("breaker", BreakerFile), default.breaker),
        delegation_retry=_read_retry(section.section("delegation_retry", RetryFile)),
        auth=read_auth(section.section("auth", AuthFile), base_dir),
        tls=read_tls(section, base_dir),
    )


def _read_regions(
    root: Section, master_section: Section, master: MasterConfig, base_dir: Path | None
) -> list[tuple[str, RegionConfig]]:
    """The valid regions with their key paths; fallbacks are checked once all names are known."""
    entries = root.items("regions")
    if not entries and root.ok("regions") and root.is_mapping:
        root.complain("regions", "at least one region is required")
    regions: list[tuple[str, RegionConfig]] = []
    fallbacks: list[tuple[str, list[tuple[str, str]]]] = []
    first_index: dict[str, int] = {}
    for index, (path, raw) in enumerate(entries):
        section = Section.open(raw, path, RegionFile, root.problems, "a mapping such as {name: eu}")
        region, region_fallbacks = _read_region(section, master_section, master, base_dir)
        if region is None:
            continue
        if region.name in first_index:
            also = join("regions", first_index[region.name])
            root.problems.append(f'regions: duplicate region name "{region.name}" (also {also})')
            continue
        first_index[region.name] = index
        regions.append((path, region))
        fallbacks.append((region.name, region_fallbacks))
    for name, region_fallbacks in fallbacks:
        check_fallbacks(name, region_fallbacks, set(first_index), root.problems)
    return regions


def _read_region(
    section: Section, master_section: Section, master: MasterConfig, base_dir: Path | None
) -> tuple[RegionConfig | None, list[tuple[str, str]]]:
    """The region (None if it has no valid name) and its fallbacks with their key paths."""
    if "name" not in section.values:
        if section.is_mapping:
            section.complain("name", "missing; every region needs a name")
        return None, []
    name = section.value("name", values.region_name, "")
    fallbacks = _read_fallbacks(section)
    default = RegionConfig(name=name)
    duration = values.positive_duration
    workers_section = section.section("workers", WorkersFile)
    region = RegionConfig(
        name=name,
        grpc=section.value("grpc", values.address, default.grpc),
        http=section.value("http", values.address, default.http),
        capacity=section.value("capacity", values.positive_int, default.capacity),
        age_step=section.value("age_step", duration, default.age_step),
        heartbeat_interval=section.value(
            "heartbeat_interval", duration, default.heartbeat_interval
        ),
        worker_heartbeat_timeout=section.value(
            "worker_heartbeat_timeout", duration, default.worker_heartbeat_timeout
        ),
        lost_run_retries=section.value(
            "lost_run_retries", values.non_negative_int, default.lost_run_retries
        ),
        shutdown_timeout=section.value("shutdown_timeout", duration, default.shutdown_timeout),
        fallbacks=tuple(fallback for _, fallback in fallbacks),
        breakers=_read_region_breakers(section.section("breakers", RegionBreakersFile)),
        workers=_read_workers(workers_section, base_dir),
        autoscaling=read_autoscaling(section),
        tls=read_tls(section, base_dir),
    )
    check_order(
        DurationField(section, "heartbeat_interval", region.heartbeat_interval),
        DurationField(master_section, "region_heartbeat_timeout", master.region_heartbeat_timeout),
    )
    check_order(
        DurationField(workers_section, "heartbeat_interval", region.workers.heartbeat_interval),
        DurationField(section, "worker_heartbeat_timeout", region.worker_heartbeat_timeout),
    )
    return (region if section.ok("name") else None), fallbacks


def _read_fallbacks(section: Section) -> list[tuple[str, str]]:
    fallbacks: list[tuple[str, str]] = []
    for path, raw in section.items("fallbacks"):
        if isinstance(raw, str):
            fallbacks.append((path, raw))
        else:
            section.problems.append(f"{path}: {values.expected('a region name', raw, text=True)}")
    return fallbacks


def _read_region_breakers(section: Section) -> RegionBreakers:
    default = RegionBreakers()
    return RegionBreakers(
        worker=_read_breaker(section.section("worker", BreakerFile), default.worker),
        kind=_read_breaker(section.section("kind", BreakerFile), default.kind),
    )


def _read_workers(section: Section, base_dir: Path | None) -> WorkerPoolConfig:
    default = WorkerPoolConfig()
    duration = values.positive_duration
    workers = WorkerPoolConfig(
        count=section.value("count", values.non_negative_int, default.count),
        slots=section.value("slots", values.positive_int, default.slots),
        labels=section.string_map("labels"),
        heartbeat_interval=section.value(
            "heartbeat_interval", duration, default.heartbeat_interval
        ),
        http=section.value("http", values.address, default.http),
        shutdown_timeout=section.value("shutdown_timeout", duration, default.shutdown_timeout),
        tls=read_tls(section, base_dir),
        policy=read_policy(section),
    )
    last_port = workers.http.port + workers.count - 1
    if not workers.http.picks_free_port and last_port > 65535 and section.ok("http", "count"):
        section.complain(
            "http",
            f"port {workers.http.port} leaves no room for {workers.count} workers "
            "(worker i listens on port + i; use port 0 for free ports)",
        )
    return workers
