"""What one worker process needs to know, resolved once from the topology and its flags."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType

from taskmesh.common.errors import ConfigError
from taskmesh.common.model import Executor
from taskmesh.common.topology import Address, ExecutorPolicy, TlsConfig, Topology
from taskmesh.common.topology.config import DEFAULT_OUTPUT_LIMIT
from taskmesh.worker.executor import RunAs
from taskmesh.worker.policy import CommandPolicy, command_environment, resolve_run_as


def default_worker_id() -> str:
    """``hostname-pid``: unique among the workers of a host, stable for the process's life."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """One worker: its identity, its region, its capacity and its time bounds."""

    region: str
    region_address: str  # host:port of the region's gRPC listener, as bound
    worker_id: str = field(default_factory=default_worker_id)
    slots: int = 4
    labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    executors: tuple[Executor, ...] = tuple(Executor)
    heartbeat_interval: timedelta = timedelta(seconds=1)  # until the region's welcome says
    http: Address = field(default_factory=lambda: Address("127.0.0.1", 0))
    grpc: Address = field(default_factory=lambda: Address("127.0.0.1", 0))  # health only
    shutdown_timeout: timedelta = timedelta(seconds=30)  # for running commands to finish
    flush_timeout: timedelta = timedelta(seconds=5)  # then for the region to ack the results
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    tls: TlsConfig | None = None  # client certificate for the region's mutual TLS
    policy: CommandPolicy = field(
        default_factory=lambda: CommandPolicy.of(ExecutorPolicy(), "workers.policy")
    )
    command_env: tuple[tuple[str, str], ...] | None = None  # None: commands get the worker's env
    run_as: RunAs | None = None

    @classmethod
    def from_topology(
        cls,
        topology: Topology,
        region: str,
        *,
        slots: int | None = None,
        worker_id: str | None = None,
        region_address: Address | None = None,
        http: Address | None = None,
        grpc: Address | None = None,
        environ: Mapping[str, str] = MappingProxyType({}),
    ) -> WorkerSettings:
        """The settings of a worker of ``region``; each given argument overrides the topology.

        ``environ`` is the worker's environment, from which the policy's ``env`` allow-list
        picks what commands get.
        """
        config = topology.region(region)
        pool = config.workers
        address = region_address or config.grpc
        if address.picks_free_port:
            raise ConfigError(
                [
                    f"regions.{region}.grpc: port 0 is picked when the region starts; pass the "
                    "address it bound with --region-address HOST:PORT"
                ],
                topology.source,
            )
        rules = f"regions.{region}.workers.policy"
        if slots is not None and slots < 1:
            raise ConfigError([f"--slots: expected a positive number, got {slots}"])
        return cls(
            region=region,
            region_address=str(address),
            worker_id=worker_id or default_worker_id(),
            slots=pool.slots if slots is None else slots,
            labels=pool.labels,
            heartbeat_interval=pool.heartbeat_interval,
            http=http or pool.http,
            grpc=grpc or Address("127.0.0.1", 0),
            shutdown_timeout=pool.shutdown_timeout,
            output_limit=pool.policy.output_limit,
            tls=pool.tls,
            policy=CommandPolicy.of(pool.policy, rules),
            command_env=command_environment(pool.policy, environ),
            run_as=resolve_run_as(pool.policy, rules),
        )
