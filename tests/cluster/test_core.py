"""The core runtime on real ranks: every scenario of scenarios.py, in two launch modes.

One cluster per mode runs all scenarios (starting a cluster per scenario would
cost more than the scenarios); each scenario is still its own test.
"""

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import check_scenario, mpiexec, run, scenario_names, scenario_results

SCRIPT = str(Path(__file__).with_name("scenarios.py"))
NAMES = scenario_names(SCRIPT)

MODES = {
    # mpiexec -n 3: rank 0 drives, two raylets with 2 CPUs and one declared GPU each
    "mpiexec": lambda: [mpiexec(), "-n", "3", sys.executable, SCRIPT, json.dumps({"num_cpus": 2, "num_gpus": 1})],
    # plain python: the embedded cluster spawns two raylet ranks itself
    "embedded": lambda: [sys.executable, SCRIPT, json.dumps({"num_cpus": 2, "num_gpus": 1, "num_nodes": 2})],
}


@pytest.fixture(scope="module", params=sorted(MODES))
def cluster_run(request):
    result = run(MODES[request.param](), timeout=150)
    return request.param, result, scenario_results(result.stdout)


@pytest.mark.parametrize("name", NAMES)
def test_scenario(cluster_run, name):
    check_scenario(*cluster_run, name)


def test_run_exits_zero_and_leaves_nothing(cluster_run):
    mode, result, _ = cluster_run
    assert result.returncode == 0, result
    assert result.leftovers() == [], f"[{mode}] processes left after the job"


def test_print_in_task_reaches_driver_with_prefix(cluster_run):
    _, result, _ = cluster_run
    lines = [l for l in result.stdout.splitlines() if "talking-" in l]
    assert len(lines) == 3, result.stdout
    for line in lines:
        assert re.match(r"^\(\S*talk pid=\d+, rank=[12], host=\S+\) talking-\d$", line), line
