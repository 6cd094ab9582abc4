"""A raylet rank that dies ends the whole job quickly, with a message and no leftovers."""

import re
import socket
from pathlib import Path

import pytest
from conftest import run_mpi, run_python
from mpich_leftovers import hydra_files, mpich_segments, remove_files, remove_unmapped

from mpiray._store.shm import default_root, sweep_stale

APP = str(Path(__file__).with_name("apps") / "kill_raylet.py")
KILL_DRIVER = str(Path(__file__).with_name("apps") / "kill_driver.py")
RAYLET_ERROR = str(Path(__file__).with_name("apps") / "raylet_error.py")


@pytest.fixture(autouse=True)
def no_mpich_leftovers():
    """Every test here kills or aborts a job: remove the MPICH segments, mpiexec's
    topology files and the store folders (whose processes are all gone) that it left."""
    before, hydra_before = mpich_segments(), hydra_files()
    yield
    remove_unmapped(mpich_segments() - before)
    remove_files(hydra_files() - hydra_before)  # the job's processes are gone (check())
    sweep_stale(default_root(), min_age=0)


def check(result):
    assert "KILLING" in result.stdout, result
    assert "UNREACHABLE" not in result.stdout
    assert result.returncode != 0, result
    assert result.elapsed < 30, f"the job took {result.elapsed:.1f}s to end"
    assert result.leftovers(wait=10) == [], "processes of the job survived"


def names_rank_2(stderr: str) -> bool:
    """rank 2's death is named: alone, or among ranks whose ends the watchdog saw at the same
    instant ("rank 1 (...) or rank 2 (...) died (they ended within the same instant ...)":
    the launcher may kill rank 1 before the watchdog wakes up for rank 2)."""
    rank = rf"rank \d+ \(host {re.escape(socket.gethostname())}, pid \d+\)"
    return any(re.search(rf"mpiray: (?:{rank} or )*rank 2 \(host [^)]*\)(?: or {rank})* died", line)
               for line in stderr.splitlines())


def test_killed_raylet_ends_mpiexec_job():
    result = run_mpi(APP, 3, timeout=60)
    check(result)
    # MPICH's mpiexec SIGKILLs the other ranks at once; rank 0 names the dead rank when it
    # notices first (Service._check_ranks), else its watchdog process does (mpiray/_watchdog.py)
    assert names_rank_2(result.stderr), result


def test_killed_driver_ends_the_raylets():
    # rank 0 dies without a word: the raylets notice (its pid is gone) and end, with their
    # workers and store; their message goes to MPICH's output forwarding, which may be gone
    result = run_python(KILL_DRIVER, timeout=60)
    assert "KILLING" in result.stdout, result
    assert result.returncode != 0, result
    assert result.elapsed < 30, f"the job took {result.elapsed:.1f}s to end"
    assert result.leftovers(wait=10) == [], "processes of the job survived"


def test_killed_raylet_ends_embedded_job():
    # the process manager MPICH starts for the embedded cluster SIGKILLs the driver's whole
    # process group; rank 0 or its watchdog process names the rank that died
    result = run_python(APP, timeout=60)
    check(result)
    assert names_rank_2(result.stderr), result


def test_raylet_error_ends_the_job_with_its_rank_and_cause():
    for result in (run_mpi(RAYLET_ERROR, 2, timeout=60), run_python(RAYLET_ERROR, timeout=60)):
        assert "BREAKING" in result.stdout, result
        assert "UNREACHABLE" not in result.stdout
        assert result.returncode != 0, result
        assert result.elapsed < 30, f"the job took {result.elapsed:.1f}s to end"
        host = socket.gethostname()
        text = result.stdout + result.stderr
        assert f"rank 1 (host {host}" in text and "no_such_message" in text, result
        assert result.leftovers(wait=10) == [], "processes of the job survived"
