"""Under srun, a raylet rank killed mid-job ends the job with mpiray's own message.

srun does not end a step when one task dies, so rank 0's liveness check notices
the dead raylet, prints which rank and host died, and aborts the job.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

import subprocess
import time

from mpich_leftovers import mpich_segments, remove_unmapped
from slurm_jobs import CMD_TIMEOUT, job_env, output_file, processes_with_marker, submit, wait_gone

pytestmark = pytest.mark.slurm

APP = Path(__file__).resolve().parents[1] / "cluster" / "apps" / "kill_raylet.py"

BATCH = """#!/bin/bash
#SBATCH --job-name=kill-raylet
#SBATCH --ntasks=3
#SBATCH --cpus-per-task=1
#SBATCH --overcommit
#SBATCH --time=00:03:00
#SBATCH --output=%x-%j.out
srun --mpi=pmi2 "$PYTHON" {app}
echo "SRUN_EXIT $?"
"""


def started(path, deadline: float) -> bool:
    """Whether the job reached the kill within ``deadline`` s (Slurm's pmi2 start-up now and
    then hangs before MPI_Init returns, see docs/slurm.md: such a job is resubmitted)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path().exists() and "KILLING" in path().read_text():
            return True
        time.sleep(0.2)
    return False


def test_killed_raylet_under_srun_is_named_and_ends_the_job(tmp_path):
    marker = f"mpiray-slurm-test-{uuid.uuid4().hex}"
    batch = tmp_path / "kill.sbatch"
    batch.write_text(BATCH.format(app=APP))
    before = mpich_segments()
    try:
        check_killed_job(tmp_path, batch, marker)
    finally:
        remove_unmapped(mpich_segments() - before)


def check_killed_job(tmp_path, batch, marker):
    for _attempt in range(3):
        job = submit(batch, cwd=tmp_path, env=job_env(marker))
        if started(lambda: output_file(tmp_path, job), 30):
            break
        subprocess.run(["scancel", job], timeout=CMD_TIMEOUT, check=False)
        wait_gone(job, 30)
    else:
        pytest.fail("three jobs in a row never got through MPI start-up under srun")
    t0 = time.monotonic()
    wait_gone(job, 30)  # the kill must end the job, well within the 30 s the issue allows
    took = time.monotonic() - t0
    out = output_file(tmp_path, job).read_text()
    assert "UNREACHABLE" not in out, out
    assert f"mpiray: rank 2 (host {socket.gethostname()}" in out and "died" in out, out
    assert out.split("SRUN_EXIT", 1)[1].split()[0] != "0", out
    assert took < 30, f"{took:.1f}s\n{out}"
    assert processes_with_marker(marker) == []
