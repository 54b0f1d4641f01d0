"""Graceful shutdown: NOT_SERVING, the round in flight finished, exit 0 on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_master_harness import eventually, fake_regions, make_topology, running_master

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RunState, TaskSpec

READY = re.compile(r"^READY grpc=127\.0\.0\.1:(\d+) http=127\.0\.0\.1:(\d+)$")
TOPOLOGY = """
master:
  grpc: 127.0.0.1:0
  http: 127.0.0.1:0
  shutdown_timeout: 10s
regions:
  - name: eu
"""


async def test_stop_finishes_the_round_in_flight_while_not_serving(ledger: Ledger) -> None:
    """A slow Delegate in flight completes after stop(); health says NOT_SERVING meanwhile."""
    async with fake_regions("eu", delay=1.0) as regions:
        async with running_master(make_topology(("eu",)), ledger, regions) as served:
            await eventually(lambda: regions["eu"].probes >= 1)
            _, run, _ = await ledger.submit_task(
                TaskSpec(name="slow", command="true"), datetime.now(UTC)
            )
            assert run is not None
            await eventually(lambda: regions["eu"].incoming == 1)  # the Delegate is in flight
            served.master.stop()
            async with grpc.aio.insecure_channel(served.grpc) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                answer = await health.Check(health_pb2.HealthCheckRequest())
                assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert [r.run_id for r in regions["eu"].delegated] == [run.id]
        assert (await ledger.get_run(run.id)).state is RunState.DELEGATED


async def test_the_process_prints_ready_and_exits_0_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    """``python -m taskmesh.master`` announces its addresses, then drains on SIGTERM."""
    topology = tmp_path / "topology.yaml"
    topology.write_text(TOPOLOGY)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskmesh.master",
        "--topology",
        str(topology),
        "--database-url",
        database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(60):
            line = (await process.stdout.readline()).decode().strip()
        match = READY.match(line)
        assert match, line
        async with grpc.aio.insecure_channel(f"127.0.0.1:{match[1]}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest())
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            code = await process.wait()
        assert code == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
