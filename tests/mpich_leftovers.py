"""MPICH's shared-memory segments that a killed or aborted job leaves in /dev/shm.

Left behind, a later job whose segment name hashes the same (pids and Slurm job
ids repeat) can hang in MPI_Init, so tests that kill or abort jobs remove what
their job left: segments no live process maps.
"""

from __future__ import annotations

import glob
import os
import tempfile


def mpich_segments() -> set[str]:
    return set(glob.glob("/dev/shm/mpich_shm_*"))


def remove_unmapped(paths: set[str]) -> None:
    """Delete those of ``paths`` that no process maps any more."""
    mapped = set()
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/maps") as f:
                    mapped.update(line.split()[-1] for line in f if "mpich_shm_" in line)
            except OSError:
                pass
    for path in paths - mapped:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def hydra_files() -> set[str]:
    """The topology files MPICH's mpiexec (Hydra) writes to the temporary folder: it
    removes its own when it exits normally, not when one of its ranks was killed."""
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "hydra_hwloc_xmlfile_*")))


def remove_files(paths: set[str]) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
