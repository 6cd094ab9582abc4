"""Under srun, a raylet rank killed mid-job ends the job with mpiray's own message.

srun does not end a step when one task dies, so rank 0's liveness check notices
the dead raylet, prints which rank and host died, and aborts the job.
"""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import pytest

from slurm_jobs import job_env, processes_with_marker, run_job

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


def test_killed_raylet_under_srun_is_named_and_ends_the_job(tmp_path):
    marker = f"mpiray-slurm-test-{uuid.uuid4().hex}"
    batch = tmp_path / "kill.sbatch"
    batch.write_text(BATCH.format(app=APP))
    done = run_job(batch, cwd=tmp_path, env=job_env(marker), deadline=60)
    assert "KILLING" in done.output and "UNREACHABLE" not in done.output, str(done)
    assert f"mpiray: rank 2 (host {socket.gethostname()}" in done.output and "died" in done.output, str(done)
    srun_exit = done.output.split("SRUN_EXIT", 1)[1].split()[0]
    assert srun_exit != "0", str(done)
    assert done.seconds < 60, str(done)
    assert processes_with_marker(marker) == []
