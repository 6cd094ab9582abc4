"""The core runtime on real ranks: every scenario of scenarios.py, in two launch modes.

One cluster per mode runs all scenarios (starting a cluster per scenario would
cost more than the scenarios); each scenario is still its own test.
"""

import json
import re
import sys
from pathlib import Path

from conftest import mpiexec, scenario_suite

SCRIPT = str(Path(__file__).with_name("scenarios.py"))
ARGS = {"num_cpus": 2, "num_gpus": 1}
MODES = {
    # mpiexec -n 3: rank 0 drives, two raylets with 2 CPUs and one declared GPU each
    "mpiexec": (lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, json.dumps(ARGS)], None),
    # plain python: the embedded cluster spawns two raylet ranks itself
    "embedded": (lambda: [sys.executable, SCRIPT, json.dumps({**ARGS, "num_nodes": 2})], None),
}

suite_run, test_scenario, test_run_ends_cleanly = scenario_suite(SCRIPT, MODES)


def test_print_in_task_reaches_driver_with_prefix(suite_run):
    _, result, _ = suite_run
    lines = [l for l in result.stdout.splitlines() if "talking-" in l]
    assert len(lines) == 3, result.stdout
    for line in lines:
        assert re.match(r"^\(\S*talk pid=\d+, rank=[12], host=\S+\) talking-\d$", line), line
