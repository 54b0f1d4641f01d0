"""``taskmesh region`` as a real process: READY line, heartbeat row, SIGTERM exits 0."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from test_region_harness import WAIT, eventually

from taskmesh.common.ledger import Ledger
from taskmesh.common.model import RegionState
from taskmesh.common.topology import Address, RegionConfig, Topology, dump_topology


async def test_the_command_serves_until_sigterm(
    database_url: str, ledger: Ledger, tmp_path: Path
) -> None:
    loopback = Address("127.0.0.1", 0)
    topology = Topology(regions=(RegionConfig(name="r1", grpc=loopback, http=loopback),))
    path = tmp_path / "topology.yaml"
    path.write_text(dump_topology(topology))
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "taskmesh", "region", "--name", "r1", "--topology", str(path)],
        *["--database-url", database_url],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), WAIT)).decode()
        assert line.startswith("READY grpc=127.0.0.1:")
        fields = dict(item.split("=", 1) for item in line.split()[1:])
        (row,) = await eventually(ledger.list_regions, lambda rows: len(rows) == 1)
        assert (row.name, row.address, row.state) == ("r1", fields["grpc"], RegionState.UP)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), WAIT) == 0
        (row,) = await ledger.list_regions()
        assert row.state is RegionState.DOWN
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
