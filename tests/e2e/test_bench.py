"""`taskmesh bench` at toy sizes: it runs every scenario and reports them in the documented shape.

Speed is not asserted (the machine is shared); only that each figure is there and sane.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCENARIOS = {"throughput", "pickup", "submit", "probe", "memory", "cluster", "ledger"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_bench_smoke_reports_every_scenario(database_url: str, tmp_path: Path) -> None:
    report_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = [sys.executable, "-m", "taskmesh", "bench", "--database-url", database_url]
    argv += ["--runs", "40", "--rates", "20,40", "--pickup-seconds", "1", "--queued", "30"]
    argv += ["--cluster-regions", "2", "--cluster-workers", "6", "--cluster-runs", "30"]
    argv += ["--ledger-rows", "100,1000", "--claims", "3"]
    argv += ["--workers", "1", "--slots", "4", "--work-dir", str(tmp_path / "work")]
    argv += ["--json", str(report_path), "--plot", str(plot_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads(report_path.read_text())
    assert set(report["options"]["scenarios"]) == SCENARIOS
    assert {"fsync", "synchronous_commit"} <= set(report["ledger"])
    results = report["results"]
    assert results["probe"]["rows"] == 40
    assert results["probe"]["rows_per_second"] > 0
    assert results["throughput"]["runs"] == 40
    assert results["throughput"]["runs_per_second"] > 0
    assert results["throughput_of_probe"] > 0
    assert [point["rate"] for point in results["pickup"]] == [20, 40]
    for point in results["pickup"]:
        assert point["runs"] == point["rate"]  # one second of offered load
        assert 0 <= point["p50"] <= point["p99"] <= point["max"]
    assert set(results["submit"]) == {"grpc_single", "grpc_batch", "rest_single", "rest_batch"}
    assert all(mode["tasks_per_second"] > 0 for mode in results["submit"].values())
    memory = results["memory"]
    daemons = {"master", "region-eu", "region-us", "region-hold", "worker-eu-1", "worker-us-1"}
    assert set(memory["idle"]) == daemons
    assert set(memory["peak_during_throughput"]) == daemons
    assert memory["queued"]["runs"] == 30
    assert set(memory["queued"]["rss_mib"]) == {"master", "region-hold"}
    assert all(mib > 0 for mib in memory["idle"].values())

    cluster = results["cluster"]
    assert (cluster["regions"], cluster["workers"]) == (2, 6)
    assert cluster["baseline"]["workers"] == 2
    assert cluster["baseline"]["throughput"]["runs"] == cluster["throughput"]["runs"] == 30
    assert cluster["of_baseline"] > 0
    assert set(cluster["region_rss_mib"]["peak"]) == {"region-r01", "region-r02"}
    ledger = results["ledger"]
    assert [size["history_runs"] for size in ledger["sizes"]] == [100, 1000]
    assert [size["ledger_runs"] for size in ledger["sizes"]] == [1100, 2000]  # + the due runs
    for size in ledger["sizes"]:
        assert 0 < size["claim_ms_p50"] <= size["claim_ms_p90"]
        assert size["baseline_claim_ms_p50"] > 0
    assert ledger["largest_over_baseline"] > 0

    assert plot_path.read_bytes().startswith(PNG_SIGNATURE)
    table = done.stdout
    headings = ("probe", "throughput", "pickup @20/s", "grpc_batch", "region-hold RSS")
    for heading in (*headings, "6 workers / 2 regions", "1,000 finished runs"):
        assert heading in table
