"""``taskmesh health``: every daemon of the running cluster, ready or not, as one table.

Daemons come from the state file of ``taskmesh up`` (addresses of master, regions, workers)
and from the master's cluster view (``GetCluster``), which adds regions and workers the state
file does not know. Each daemon is asked over both of its interfaces: the standard gRPC health
``Check`` and HTTP ``/readyz`` (whose body names the failing components). A daemon known only
from the cluster view is judged by the state the master reports. The exit status is 1 when
any daemon is not ready.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from taskmesh.cli.shared import default_state_file, read_state
from taskmesh.common.command_line import EXIT_FAILURE, EXIT_OK

if TYPE_CHECKING:
    import aiohttp

    from taskmesh.cli.shared import Subcommands
    from taskmesh.common.rpc import cluster_pb2

DEFAULT_TIMEOUT = 3.0
SERVING = "SERVING"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"  # the generated stub is untyped
HEADER = ("DAEMON", "TIER", "ADDRESS", "GRPC HEALTH", "READY", "FAILING")


@dataclass(frozen=True, slots=True)
class Target:
    """One daemon to ask: its addresses, or only the state the master reports for it."""

    name: str
    tier: str
    http: str | None = None
    grpc: str | None = None
    reported: str | None = None  # the master's view, for a daemon with no address known


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one daemon answered."""

    target: Target
    grpc: str = "-"
    failing: tuple[str, ...] = field(default=())

    @property
    def ready(self) -> bool:
        """True when nothing failed."""
        return not self.failing


def add_health_command(commands: Subcommands) -> None:
    """Register ``taskmesh health``."""
    parser = commands.add_parser(
        "health", help="every daemon's readiness as a table; exit status 1 if any is not ready"
    )
    parser.add_argument("--state-file", type=Path, help="state file written by `taskmesh up`")
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds per probe (default 3)"
    )
    parser.set_defaults(handler=show_health)


def show_health(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Probe every daemon, print the table, exit 1 when any is not ready."""
    state = read_state(args.state_file or default_state_file(env))
    verdicts = asyncio.run(probe_cluster(state, args.timeout))
    print(format_table(verdicts))
    return EXIT_OK if all(verdict.ready for verdict in verdicts) else EXIT_FAILURE


async def probe_cluster(state: Mapping[str, Any], seconds: float) -> list[Verdict]:
    """Every daemon's verdict, master first, then regions, then workers."""
    import aiohttp  # noqa: PLC0415 - only this command pays for it

    targets = state_targets(state)
    master_grpc = state.get("master", {}).get("grpc")
    if master_grpc:
        targets += view_targets(await cluster_view(master_grpc, seconds), targets)
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        return list(await asyncio.gather(*(probe(t, session, seconds) for t in targets)))


def state_targets(state: Mapping[str, Any]) -> list[Target]:
    """The daemons the state file lists, with their addresses."""
    master = state.get("master", {})
    targets = [Target("master", "master", master.get("http"), master.get("grpc"))]
    for tier in ("regions", "workers"):
        for name, addresses in state.get(tier, {}).items():
            label = f"region-{name}" if tier == "regions" else name
            targets.append(Target(label, tier[:-1], addresses.get("http"), addresses.get("grpc")))
    return targets


def view_targets(
    regions: Sequence[cluster_pb2.RegionStatus], known: Sequence[Target]
) -> list[Target]:
    """Regions and workers of the master's view the state file does not list."""
    from taskmesh.common.rpc import cluster_pb2  # noqa: PLC0415

    names = {target.name for target in known}
    targets = []
    for region in regions:
        if f"region-{region.name}" not in names:
            targets.append(Target(f"region-{region.name}", "region", grpc=region.address))
        for worker in region.workers:
            if worker.id not in names:
                state = cluster_pb2.WorkerState.Name(worker.state)
                targets.append(Target(worker.id, "worker", reported=state))
    return targets


async def cluster_view(address: str, seconds: float) -> list[cluster_pb2.RegionStatus]:
    """The master's ``GetCluster`` regions; none when it does not answer (its row says so)."""
    import grpc.aio  # noqa: PLC0415

    from taskmesh.common.rpc import scheduler_pb2, scheduler_pb2_grpc  # noqa: PLC0415

    async with grpc.aio.insecure_channel(address) as channel:
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        try:
            answer = await stub.GetCluster(scheduler_pb2.GetClusterRequest(), timeout=seconds)
        except grpc.aio.AioRpcError:
            return []
    return list(answer.regions)


async def probe(target: Target, session: aiohttp.ClientSession, seconds: float) -> Verdict:
    """Ask one daemon over gRPC health and ``/readyz``."""
    if target.http is None and target.grpc is None:
        reported = target.reported or "unknown"
        ok = reported.endswith("_UP")
        return Verdict(target, failing=() if ok else (f"master reports {reported}",))
    failing: list[str] = []
    status = "-"
    if target.grpc:
        status = await grpc_health(target.grpc, seconds)
        if status != SERVING:
            failing.append(f"grpc {status}")
    if target.http:
        failing += await readyz(session, target.http)
    return Verdict(target, status, tuple(failing))


async def grpc_health(address: str, seconds: float) -> str:
    """The whole server's status from ``grpc.health.v1.Health/Check``, or why there is none."""
    import grpc.aio  # noqa: PLC0415
    from grpc_health.v1 import health_pb2  # noqa: PLC0415

    async with grpc.aio.insecure_channel(address) as channel:
        check = channel.unary_unary(
            HEALTH_CHECK,
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            answer = await check(health_pb2.HealthCheckRequest(service=""), timeout=seconds)
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status))


async def readyz(session: aiohttp.ClientSession, address: str) -> list[str]:
    """The failing components ``/readyz`` names; the reason when it does not answer."""
    import aiohttp  # noqa: PLC0415

    try:
        async with session.get(f"http://{address}/readyz") as response:
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        return [f"http unreachable ({type(error).__name__})"]
    try:
        body = json.loads(text)
    except ValueError:
        body = {}
    failing = body.get("failing") if isinstance(body, dict) else None
    if status == 200:
        return []
    if isinstance(failing, list) and failing:
        return [str(name) for name in failing]
    return [f"/readyz answered {status}"]


def format_table(verdicts: Sequence[Verdict]) -> str:
    """The verdicts as aligned columns under ``HEADER``."""
    rows = [HEADER] + [
        (
            verdict.target.name,
            verdict.target.tier,
            verdict.target.http or verdict.target.grpc or "-",
            verdict.grpc,
            "yes" if verdict.ready else "NO",
            ", ".join(verdict.failing) or "-",
        )
        for verdict in verdicts
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(HEADER) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip()
        + "  "
        + row[-1]
        for row in rows
    )
