"""From a ``Topology`` back to the file's shape: to show the effective configuration (defaults
filled in) or to hand child processes a topology whose free ports have been resolved."""

from __future__ import annotations

import shlex

import yaml

from taskmesh.common.topology.config import (
    AuthConfig,
    AutoscalingConfig,
    BreakerConfig,
    ExecutorPolicy,
    LedgerConfig,
    MasterConfig,
    RegionConfig,
    RetryConfig,
    TlsConfig,
    Topology,
    WorkerPoolConfig,
)
from taskmesh.common.topology.schema import (
    AuthFile,
    AutoscalingFile,
    BreakerFile,
    LedgerFile,
    MasterFile,
    PolicyFile,
    RegionFile,
    RetryFile,
    TlsFile,
    TopologyFile,
    WorkersFile,
)
from taskmesh.common.topology.values import format_duration


def topology_to_dict(topology: Topology, *, with_ledger_url: bool = False) -> TopologyFile:
    """The topology in the file's shape; ``parse_topology`` of the result gives it back.

    The ledger URL may hold a password, and workers must never see database credentials, so it
    is left out (``null``) unless ``with_ledger_url`` is set.
    """
    return {
        "ledger": _ledger(topology.ledger, with_ledger_url),
        "master": _master(topology.master),
        "regions": [_region(region) for region in topology.regions],
    }


def dump_topology(topology: Topology, *, with_ledger_url: bool = False) -> str:
    """The topology as YAML text, in the order of the example file."""
    data = topology_to_dict(topology, with_ledger_url=with_ledger_url)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _ledger(ledger: LedgerConfig, with_url: bool) -> LedgerFile:
    return {
        "url": ledger.url if with_url else None,
        "data_dir": None if ledger.data_dir is None else str(ledger.data_dir),
    }


def _breaker(breaker: BreakerConfig) -> BreakerFile:
    return {
        "fail_max": breaker.fail_max,
        "reset_timeout": format_duration(breaker.reset_timeout),
    }


def _retry(retry: RetryConfig) -> RetryFile:
    return {
        "attempts": retry.attempts,
        "initial_backoff": format_duration(retry.initial_backoff),
        "max_backoff": format_duration(retry.max_backoff),
    }


def _master(master: MasterConfig) -> MasterFile:
    return {
        "grpc": str(master.grpc),
        "http": str(master.http),
        "dispatch_interval": format_duration(master.dispatch_interval),
        "region_heartbeat_timeout": format_duration(master.region_heartbeat_timeout),
        "max_pending_runs": master.max_pending_runs,
        "shutdown_timeout": format_duration(master.shutdown_timeout),
        "breaker": _breaker(master.breaker),
        "delegation_retry": _retry(master.delegation_retry),
        "auth": _auth(master.auth),
        "tls": _tls(master.tls),
    }


def _auth(auth: AuthConfig) -> AuthFile:
    return {"tokens_file": None if auth.tokens_file is None else str(auth.tokens_file)}


def _tls(tls: TlsConfig | None) -> TlsFile | None:
    if tls is None:
        return None
    return {"ca": str(tls.ca), "cert": str(tls.cert), "key": str(tls.key)}


def _policy(policy: ExecutorPolicy) -> PolicyFile:
    return {
        "executors": [executor.value for executor in policy.executors],
        "commands": list(policy.commands),
        "run_as": policy.run_as,
        "env": None if policy.env is None else list(policy.env),
        "output_limit": policy.output_limit,
    }


def _workers(workers: WorkerPoolConfig) -> WorkersFile:
    return {
        "count": workers.count,
        "slots": workers.slots,
        "labels": dict(workers.labels),
        "heartbeat_interval": format_duration(workers.heartbeat_interval),
        "http": str(workers.http),
        "shutdown_timeout": format_duration(workers.shutdown_timeout),
        "tls": _tls(workers.tls),
        "policy": _policy(workers.policy),
    }


def _autoscaling(autoscaling: AutoscalingConfig) -> AutoscalingFile:
    return {
        "min_workers": autoscaling.min_workers,
        "max_workers": autoscaling.max_workers,
        "target_per_slot": autoscaling.target_per_slot,
        "cooldown": format_duration(autoscaling.cooldown),
        "interval": format_duration(autoscaling.interval),
        "command": shlex.join(autoscaling.command),
        "command_timeout": format_duration(autoscaling.command_timeout),
    }


def _region(region: RegionConfig) -> RegionFile:
    written: RegionFile = {
        "name": region.name,
        "grpc": str(region.grpc),
        "http": str(region.http),
        "capacity": region.capacity,
        "age_step": format_duration(region.age_step),
        "heartbeat_interval": format_duration(region.heartbeat_interval),
        "worker_heartbeat_timeout": format_duration(region.worker_heartbeat_timeout),
        "lost_run_retries": region.lost_run_retries,
        "shutdown_timeout": format_duration(region.shutdown_timeout),
        "fallbacks": list(region.fallbacks),
        "breakers": {
            "worker": _breaker(region.breakers.worker),
            "kind": _breaker(region.breakers.kind),
        },
        "workers": _workers(region.workers),
        "tls": _tls(region.tls),
    }
    if region.autoscaling is not None:
        written["autoscaling"] = _autoscaling(region.autoscaling)
    return written
