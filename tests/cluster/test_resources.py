"""Resource-aware scheduling on real ranks with declared GPUs, memory and custom resources."""

import json
import sys
from pathlib import Path

from conftest import mpiexec, run, scenario_suite

SCRIPT = str(Path(__file__).with_name("resources.py"))
ARGS = json.dumps({"num_cpus": 4, "num_gpus": 2, "memory": 4 << 30, "resources": {"nvme": 1}})
MODES = {"mpiexec": (lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, ARGS], None)}

suite_run, test_scenario, test_run_ends_cleanly = scenario_suite(
    SCRIPT, MODES, timeout=180)


def test_per_rank_settings_come_from_each_ranks_environment():
    # MPMD launch: rank 1 declares 3 GPUs in its own environment, rank 2 none
    code = ("import mpiray as ray; ray.init(); "
            "print('GPUS', sorted((n['Rank'], n['Resources'].get('GPU', 0)) for n in ray.nodes()))")
    exe = mpiexec()
    r = run([exe, "-n", "1", sys.executable, "-c", code, ":", "-n", "1", "-env", "MPIRAY_NUM_GPUS", "3",
             sys.executable, "-c", code, ":", "-n", "1", "-env", "MPIRAY_NUM_GPUS", "0", sys.executable, "-c", code])
    assert r.returncode == 0, r
    assert "GPUS [(1, 3), (2, 0)]" in r.stdout, r
