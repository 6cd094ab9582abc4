"""The object plane on real ranks, each rank its own "host" so bytes move by MPI RMA."""

import json
import os
import sys
from pathlib import Path

from conftest import mpiexec, run_mpi, scenario_suite

SCRIPT = str(Path(__file__).with_name("objects.py"))
ARGS = json.dumps({"num_cpus": 2, "object_store_memory": 320 << 20})
# the loop is 10,000 x 10 MiB; CI runs 10,000 x 1 MiB (same count, a tenth of the bytes);
# MPIRAY_TEST_LOOP_MIB=10 runs the full one (about 90 s here)
ENV = {"MPIRAY_SHARE_HOST_MEMORY": "0", "LOOP_ITERS": "10000",
       "LOOP_MIB": os.environ.get("MPIRAY_TEST_LOOP_MIB", "1")}
MODES = {"mpiexec-rma": (lambda: [mpiexec(), "-n", "4", sys.executable, SCRIPT, ARGS], ENV)}

suite_run, test_scenario, test_run_ends_cleanly = scenario_suite(SCRIPT, MODES, timeout=400)


def test_remote_values_stay_valid_after_shutdown():
    r = run_mpi(str(Path(__file__).parent / "apps" / "remote_values_after_shutdown.py"), 2,
                env={"MPIRAY_SHARE_HOST_MEMORY": "0"}, timeout=120)
    assert r.returncode == 0, r
    assert "DELIVERED True" in r.stdout and "KEPT [7, 9] [7, 9] 2" in r.stdout and "FREED 0" in r.stdout, r
    assert not r.leftovers(), r.leftovers()
