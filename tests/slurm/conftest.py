"""Skip tests/slurm unless a Slurm cluster answers (start one: ``sudo slurm/ci-cluster-start.sh``)."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

import pytest

HOW = ("start the single-node test cluster with `sudo slurm/ci-cluster-start.sh` "
       "(stop it with `sudo slurm/ci-cluster-stop.sh`)")


@functools.lru_cache(maxsize=1)
def why_no_slurm() -> str | None:
    for tool in ("sbatch", "squeue", "scancel", "scontrol", "sacct"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not on PATH; {HOW}"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return f"`scontrol ping` did not answer within 15 s; {HOW}"
    if not re.search(r"\bUP\b", ping.stdout):
        text = (ping.stdout + ping.stderr).strip().replace("\n", " ")[:200]
        return f"`scontrol ping` does not say UP ({text!r}); {HOW}"
    return None


@pytest.fixture(autouse=True)
def _needs_slurm():
    """Every test in tests/slurm needs a live cluster: skip with how to start one."""
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)
