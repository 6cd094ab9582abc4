"""Crash matrix, retries, lineage reconstruction, cancellation and bad input on real ranks."""

import json
import sys
from pathlib import Path

from conftest import mpiexec, scenario_suite

SCRIPT = str(Path(__file__).with_name("faults.py"))
# 2 raylets x 2 CPUs; a 48 MiB object store so "result too large for the store" is cheap to hit
ARGS = json.dumps({"num_cpus": 2, "object_store_memory": 48 << 20})
MODES = {"mpiexec": (lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, ARGS], None)}

suite_run, test_scenario, test_run_ends_cleanly = scenario_suite(SCRIPT, MODES, timeout=240)
