"""Worker leases on real ranks: round trips, errors, crashes, cancel, nested tasks, objects."""

import json
import sys
from pathlib import Path

from conftest import mpiexec, scenario_suite

SCRIPT = str(Path(__file__).with_name("leases.py"))
ARGS = json.dumps({"num_cpus": 2})
EMBEDDED = json.dumps({"num_cpus": 2, "num_nodes": 2})
MODES = {"mpiexec": (lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, ARGS], None),
         "embedded": (lambda: [sys.executable, SCRIPT, EMBEDDED], None)}

suite_run, test_scenario, test_run_ends_cleanly = scenario_suite(SCRIPT, MODES, timeout=240)
