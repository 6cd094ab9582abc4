"""The pull benchmark still runs end to end (tiny sizes; figures are not checked here)."""

import json
import sys
from pathlib import Path

from conftest import ROOT, run


def test_pull_bench_smoke(tmp_path):
    out = tmp_path / "pull.jsonl"
    r = run([sys.executable, str(ROOT / "benchmarks" / "pull_bench.py"), "--sizes", "1", "--reps", "1",
             "--rounds", "1", "--warmup", "1", "--out", str(out)], timeout=240)
    assert r.returncode == 0, r
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    systems = {row["system"] for row in rows}
    assert systems == {"mpiray-driver-get", "mpiray-raylet-pull", "mpiray", "mpi4py-rma-warm",
                       "mpi4py-rma-fresh"}, rows
    assert all(row["workload"] == "pull_1MiB" and row["value"] > 0 for row in rows), rows
    assert "driver get" in r.stdout and "raylet pull" in r.stdout and "task pull" in r.stdout, r
    assert not r.leftovers(), r.leftovers()
