"""The object plane on real ranks, each rank its own "host" so bytes move by MPI RMA."""

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import check_scenario, mpiexec, run, scenario_names, scenario_results

SCRIPT = str(Path(__file__).with_name("objects.py"))
NAMES = scenario_names(SCRIPT)
ARGS = json.dumps({"num_cpus": 2, "object_store_memory": 320 << 20})
# the loop is 10,000 x 10 MiB; CI runs 10,000 x 1 MiB (same count, a tenth of the bytes)
LOOP = {"LOOP_ITERS": "10000", "LOOP_MIB": os.environ.get("MPIRAY_TEST_LOOP_MIB", "1")}


@pytest.fixture(scope="module")
def objects_run():
    env = {"MPIRAY_SHARE_HOST_MEMORY": "0", **LOOP}
    result = run([mpiexec(), "-n", "4", sys.executable, SCRIPT, ARGS], timeout=400, env=env)
    return "mpiexec-rma", result, scenario_results(result.stdout)


@pytest.mark.parametrize("name", NAMES)
def test_object_scenario(objects_run, name):
    check_scenario(*objects_run, name)


def test_objects_run_ends_cleanly(objects_run):
    _, result, _ = objects_run
    assert result.returncode == 0, result
    assert result.leftovers() == []
