"""Every example runs and prints what it promises (embedded mode, and one under mpiexec)."""

import sys

import pytest

from conftest import ROOT, run, run_mpi

EX = ROOT / "examples"


@pytest.mark.parametrize("name,expect,env", [
    ("pipeline.py", "samples=16000000", {}),
    ("map_reduce.py", "the: 4000 fox: 2000", {}),
    ("nested.py", "fib(8) = 21", {}),
    ("parameter_server.py", "updates=200 error=", {}),
    ("gpu_task.py", "'CUDA_VISIBLE_DEVICES': '1'", {"MPIRAY_NUM_GPUS": "2"}),
])
def test_example(name, expect, env):
    r = run([sys.executable, str(EX / name)], env=env)
    assert r.returncode == 0 and expect in r.stdout, r
    assert r.leftovers() == []


def test_pipeline_under_mpiexec():
    r = run_mpi(str(EX / "pipeline.py"), 3)
    assert r.returncode == 0 and "nodes=2" in r.stdout, r
