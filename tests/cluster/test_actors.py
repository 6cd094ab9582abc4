"""Actors on real ranks: ``actors.py`` scenarios under mpiexec (objects shared on the host, and
every rank its own "host" so arguments and results move by MPI RMA) and embedded."""

import json
import sys
from pathlib import Path

from conftest import mpiexec, scenario_suite

SCRIPT = str(Path(__file__).with_name("actors.py"))
ARGS = {"num_cpus": 2, "num_gpus": 1}
MODES = {
    "mpiexec": (lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, json.dumps(ARGS)], None),
    "mpiexec-rma": (lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, json.dumps(ARGS)],
                    {"MPIRAY_SHARE_HOST_MEMORY": "0"}),
    "embedded": (lambda: [sys.executable, SCRIPT, json.dumps({**ARGS, "num_nodes": 2})], None),
}

suite_run, test_scenario, test_run_ends_cleanly = scenario_suite(SCRIPT, MODES)
