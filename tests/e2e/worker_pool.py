"""A scaling command for tests: keeps exactly N local `taskmesh worker` processes of a region.

    python worker_pool.py --state DIR --desired N --region R --address HOST:PORT --topology FILE

The workers it started are recorded (pid and id, in start order) in DIR/pool.json; it starts
more, or stops the newest ones by pid with SIGTERM (they drain), and exits at once. Their output
goes to DIR/<id>.log, never to this command's stdout, which the region reads until it closes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def main() -> int:
    parser = argparse.ArgumentParser()
    for option in ("--state", "--region", "--address", "--topology"):
        parser.add_argument(option, required=True)
    parser.add_argument("--desired", type=int, required=True)
    args = parser.parse_args()
    state = Path(args.state)
    record = state / "pool.json"
    pool = json.loads(record.read_text()) if record.exists() else {"started": 0, "workers": []}
    pool["workers"] = [worker for worker in pool["workers"] if running(worker["pid"])]
    while len(pool["workers"]) < args.desired:
        pool["started"] += 1
        worker_id = f"{args.region}-auto-{pool['started']}"
        argv = [sys.executable, "-m", "taskmesh", "worker", "--region", args.region]
        argv += ["--topology", args.topology, "--region-address", args.address, "--id", worker_id]
        with (state / f"{worker_id}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pool["workers"].append({"pid": process.pid, "id": worker_id})
    while len(pool["workers"]) > args.desired:
        os.kill(pool["workers"].pop()["pid"], signal.SIGTERM)
    record.write_text(json.dumps(pool))
    print(f"{args.region}: {len(pool['workers'])} workers", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
