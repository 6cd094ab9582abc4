"""Command lines that start mpiray ranks: pure functions returning lists of strings.

Nothing here runs a process or reads the environment; ``cli.py`` does that.

::

    local_command   mpiexec -n N python app.py          (laptop, workstation)
    step_command    srun --mpi=pmi2 ... python app.py    (inside a Slurm allocation)
                    mpiexec -n "$NRANKS" python app.py
"""

from __future__ import annotations

from typing import Sequence

#: Slurm's PMI plugin for each MPI family: the pip ``mpich`` wheel (and Cray
#: MPICH, Intel MPI, MVAPICH) talk PMI-2; Open MPI needs PMIx.
SRUN_MPI = {"mpich": "pmi2", "openmpi": "pmix"}

LAUNCHERS = ("srun", "mpiexec")
ENTRIES = ("script", "module")


def python_command(script: str, args: Sequence[str] = (), *, python: str = "python",
                   entry: str = "script") -> list[str]:
    """``python app.py args``; with ``entry="module"`` ``python -m mpiray app.py args``.

    The module entry initialises mpiray before the script runs, for scripts
    that never call ``mpiray.init()`` themselves.
    """
    if entry not in ENTRIES:
        raise ValueError(f"entry={entry!r}: expected one of {', '.join(ENTRIES)}")
    head = [python, "-m", "mpiray"] if entry == "module" else [python]
    return [*head, script, *args]


def local_command(script: str, args: Sequence[str] = (), ranks: int = 2, *,
                  mpiexec: str = "mpiexec", python: str = "python",
                  entry: str = "script") -> list[str]:
    """``mpiexec -n ranks python app.py args``: rank 0 is the driver, the others raylets."""
    if isinstance(ranks, bool) or not isinstance(ranks, int) or ranks < 2:
        raise ValueError(f"ranks={ranks!r}: need at least 2 (rank 0 is the driver, "
                         "the other ranks are raylets)")
    return [mpiexec, "-n", str(ranks), *python_command(script, args, python=python, entry=entry)]


def step_command(script: str, args: Sequence[str] = (), *, launcher: str = "srun",
                 mpi: str = "mpich", python: str = "python", entry: str = "script",
                 mpiexec: str = "mpiexec", ranks: str = '"$NRANKS"') -> list[str]:
    """The launch line inside a batch script; ``ranks`` is shell text (a number or ``"$NRANKS"``).

    srun places the ranks from ``SLURM_HOSTFILE`` (``--distribution=arbitrary``)
    and ``--overcommit`` lets the step hold the driver as one task more than
    the allocation.  The elements are shell words, already quoted.
    """
    import shlex

    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher={launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if mpi not in SRUN_MPI:
        raise ValueError(f"mpi={mpi!r}: expected one of {', '.join(SRUN_MPI)}")
    program = [shlex.quote(w) for w in python_command(script, args, python=python, entry=entry)]
    if launcher == "srun":
        return ["srun", f"--mpi={SRUN_MPI[mpi]}", "--overcommit", f"--ntasks={ranks}",
                "--distribution=arbitrary", *program]
    extra = ["--oversubscribe"] if mpi == "openmpi" else []
    return [shlex.quote(mpiexec), "-n", ranks, *extra, *program]
