"""Crash matrix, retries, lineage reconstruction, cancellation and bad input on real ranks."""

import json
import sys
from pathlib import Path

import pytest

from conftest import check_scenario, mpiexec, run, scenario_names, scenario_results

SCRIPT = str(Path(__file__).with_name("faults.py"))
NAMES = scenario_names(SCRIPT)
# 2 raylets x 2 CPUs; a 48 MiB object store so "result too large for the store" is cheap to hit
ARGS = json.dumps({"num_cpus": 2, "object_store_memory": 48 << 20})


@pytest.fixture(scope="module")
def faults_run():
    result = run([mpiexec(), "-n", "3", sys.executable, SCRIPT, ARGS], timeout=240)
    return "mpiexec", result, scenario_results(result.stdout)


@pytest.mark.parametrize("name", NAMES)
def test_fault_scenario(faults_run, name):
    check_scenario(*faults_run, name)


def test_faults_run_ends_cleanly(faults_run):
    _, result, _ = faults_run
    assert result.returncode == 0, result
    assert result.leftovers() == []
