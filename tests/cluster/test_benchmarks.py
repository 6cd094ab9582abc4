"""The pull benchmark still runs end to end (tiny sizes; figures are not checked here)."""

import json
import sys

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


def test_run_quick_with_the_pull_and_report(tmp_path):
    out = tmp_path / "run.jsonl"
    r = run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--systems", "mpiray",
             "--workloads", "single_client_tasks_sync,cross_rank_pull_1MiB", "--out", str(out)], timeout=240)
    assert r.returncode == 0, r
    rows = {(row["system"], row["workload"]): row for row in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {("mpiray", "single_client_tasks_sync"), ("mpiray", "cross_rank_pull_1MiB"),
                         ("mpi4py-rma", "cross_rank_pull_1MiB")}, rows
    assert all(row["value"] > 0 and row["git_sha"] for row in rows.values()), rows
    assert rows[("mpiray", "cross_rank_pull_1MiB")]["extra"]["driver_get"] > 0, rows
    assert "mpi4py-rma" in r.stdout.splitlines()[1], r  # the table's header
    rep = run([sys.executable, str(ROOT / "benchmarks" / "report.py"), str(out)], timeout=60)
    assert rep.returncode == 0, rep
    assert "| sync round trip <= 1/10 of Ray's | " in rep.stdout and "no ray figure" in rep.stdout, rep
    assert not r.leftovers(), r.leftovers()
