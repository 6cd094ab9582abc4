"""How users start an mpiray job: command lines and Slurm batch scripts.

Pure functions that return data (``local_command``, ``step_command``) or text
(``render_sbatch``); only ``mpiray.launch.cli`` (the ``mpiray`` command) runs
anything.  See docs/launch.md and docs/slurm.md.
"""

from ._commands import SRUN_MPI, local_command, python_command, step_command
from ._sbatch import JobSpec, render_sbatch, sbatch_options

__all__ = [
    "SRUN_MPI",
    "JobSpec",
    "local_command",
    "python_command",
    "render_sbatch",
    "sbatch_options",
    "step_command",
]
