"""The cluster topology: ``topology.yaml`` parsed once into frozen dataclasses.

Entry points load the file with ``load_topology`` (the only place that reads
``TASKMESH_DATABASE_URL``) and pass the resulting ``Topology`` down; nothing below them reads
the file or the environment. Invalid files raise ``ConfigError`` listing every problem, each as
``key.path: what is wrong, got what was found``; ``format_problems`` renders them one per line.

Modules: ``config`` (runtime dataclasses and their defaults), ``schema`` (the file's shape as
TypedDicts), ``values`` (durations, addresses, URLs), ``sections`` and ``parser`` (validation),
``loader`` (files and YAML), ``writer`` (back to the file's shape).
"""

from taskmesh.common.topology.config import (
    Address,
    AuthConfig,
    AutoscalingConfig,
    BreakerConfig,
    ExecutorPolicy,
    LedgerConfig,
    MasterConfig,
    RegionBreakers,
    RegionConfig,
    RetryConfig,
    TlsConfig,
    Topology,
    WorkerPoolConfig,
)
from taskmesh.common.topology.loader import format_problems, load_topology
from taskmesh.common.topology.parser import DATABASE_URL_VARIABLE, parse_topology
from taskmesh.common.topology.schema import TopologyFile
from taskmesh.common.topology.values import InvalidValue, format_duration
from taskmesh.common.topology.values import address as parse_address
from taskmesh.common.topology.values import positive_duration as parse_duration
from taskmesh.common.topology.writer import dump_topology, topology_to_dict

__all__ = [
    "DATABASE_URL_VARIABLE",
    "Address",
    "AuthConfig",
    "AutoscalingConfig",
    "BreakerConfig",
    "ExecutorPolicy",
    "InvalidValue",
    "LedgerConfig",
    "MasterConfig",
    "RegionBreakers",
    "RegionConfig",
    "RetryConfig",
    "TlsConfig",
    "Topology",
    "TopologyFile",
    "WorkerPoolConfig",
    "dump_topology",
    "format_duration",
    "format_problems",
    "load_topology",
    "parse_address",
    "parse_duration",
    "parse_topology",
    "topology_to_dict",
]
