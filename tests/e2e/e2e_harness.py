"""The handle e2e tests get on a running `taskmesh up` (imported by conftest and tests)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskmesh.client import Client


@dataclass
class RunningCluster:
    """Addresses of a running `taskmesh up`, as its state file tells them."""

    state_file: Path
    log_dir: Path
    process: subprocess.Popen[bytes]

    @property
    def state(self) -> dict[str, Any]:
        return dict(json.loads(self.state_file.read_text()))

    @property
    def master(self) -> str:
        return str(self.state["master"]["grpc"])

    @property
    def rest(self) -> str:
        return str(self.state["master"]["rest"])

    def client(self) -> Client:
        return Client(self.master)

    def worker_pid(self, worker_id: str) -> int:
        return int(self.state["workers"][worker_id]["pid"])

    def logs(self) -> str:
        parts = [f"--- {path.name}\n{path.read_text()[-4000:]}" for path in self.log_dir.glob("*")]
        return "\n".join(parts)
