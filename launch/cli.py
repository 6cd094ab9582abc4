"""The ``mpiray`` command: the only part of ``mpiray.launch`` that runs anything.

::

    mpiray run -n 4 app.py [args]            exec mpiexec -n 4 python app.py args
    mpiray render --nodes 2 ... app.py       print a Slurm batch script
    mpiray sbatch --nodes 2 ... app.py       write <job-name>.sbatch and submit it
    mpiray sbatch --dry-run ... app.py       print the script, write and submit nothing
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from typing import Sequence

from .._comm.mpi import find_mpiexec  # a path lookup: MPI itself is never started here
from ._commands import LAUNCHERS, SRUN_MPI, local_command
from ._sbatch import GPU_FLAGS, RAYLET_LAYOUTS, JobSpec, render_sbatch



def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return name, value


def _script_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-m", "--module", dest="entry", action="store_const", const="module",
                        default="script",
                        help="run the script through `python -m mpiray` (for scripts that "
                             "never call mpiray.init())")
    parser.add_argument("--python", default=sys.executable,
                        help="Python interpreter for every rank (default: this one, %(default)s)")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")


def _job_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("allocation")
    g.add_argument("-N", "--nodes", type=int, default=1, help="nodes (default 1)")
    g.add_argument("--gpus-per-node", type=int, default=0, help="GPUs per node (default 0)")
    g.add_argument("--raylet-per", choices=RAYLET_LAYOUTS, default="node",
                   help="one raylet per node (default) or one per GPU")
    g.add_argument("-c", "--cpus-per-raylet", "--cpus-per-task", dest="cpus_per_raylet",
                   type=int, default=None, help="CPUs per raylet (--cpus-per-task)")
    g.add_argument("--mem", default=None, help="memory per node, e.g. 64G (--mem)")
    g.add_argument("-t", "--time", default="01:00:00", help="time limit (default %(default)s)")
    g.add_argument("-J", "--job-name", default="mpiray", help="job name (default %(default)s)")
    g.add_argument("-o", "--output", default="%x-%j.out",
                   help="log file, relative to the submit directory (default %(default)s)")
    g.add_argument("-p", "--partition", default=None)
    g.add_argument("-A", "--account", default=None)
    g.add_argument("--gpu-flag", choices=GPU_FLAGS, default="gres",
                   help="ask for GPUs with --gres=gpu:N (default) or --gpus-per-node=N")
    g.add_argument("--sbatch-option", dest="sbatch_options", action="append", default=[],
                   metavar="OPT", help="extra #SBATCH option, e.g. --qos=debug (repeatable)")
    s = parser.add_argument_group("launch")
    s.add_argument("--launcher", choices=LAUNCHERS, default="srun",
                   help="srun (default) or mpiexec inside the allocation")
    s.add_argument("--mpi", choices=tuple(SRUN_MPI), default="mpich",
                   help="MPI family: mpich -> srun --mpi=pmi2 (default), openmpi -> --mpi=pmix")
    s.add_argument("--mpiexec", default="mpiexec", help="mpiexec to use with --launcher mpiexec")
    s.add_argument("--setup", action="append", default=[], metavar="LINE",
                   help="shell line before the launch, e.g. 'module load cray-mpich' (repeatable)")
    s.add_argument("--env", action="append", default=[], type=_env_pair, metavar="NAME=VALUE",
                   help="variable to export before the launch, e.g. MPIRAY_NUM_CPUS=8 (repeatable)")
    _script_arguments(parser)


def _spec(ns: argparse.Namespace) -> JobSpec:
    return JobSpec(
        script=ns.script, args=tuple(ns.args), nodes=ns.nodes, gpus_per_node=ns.gpus_per_node,
        raylet_per=ns.raylet_per, cpus_per_raylet=ns.cpus_per_raylet, mem=ns.mem, time=ns.time,
        job_name=ns.job_name, output=ns.output, partition=ns.partition, account=ns.account,
        gpu_flag=ns.gpu_flag, launcher=ns.launcher, mpi=ns.mpi, python=ns.python,
        entry=ns.entry, mpiexec=ns.mpiexec, setup=tuple(ns.setup), env=tuple(ns.env),
        sbatch_options=tuple(ns.sbatch_options))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mpiray", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run a script on local MPI ranks (mpiexec)")
    run.add_argument("-n", "--np", type=int, default=2,
                     help="MPI ranks: 1 driver + N-1 raylets (default %(default)s)")
    run.add_argument("--mpiexec", default=None,
                     help="mpiexec to use (default: next to the Python, then PATH)")
    run.add_argument("--dry-run", action="store_true", help="print the command, run nothing")
    _script_arguments(run)
    render = sub.add_parser("render", help="print a Slurm batch script")
    _job_arguments(render)
    sbatch = sub.add_parser("sbatch", help="write a Slurm batch script and submit it")
    sbatch.add_argument("--dry-run", action="store_true",
                        help="print the script; write and submit nothing")
    sbatch.add_argument("--script-file", default=None,
                        help="where to write the batch script (default <job-name>.sbatch)")
    _job_arguments(sbatch)
    return parser


def _run(ns: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    mpiexec = ns.mpiexec or find_mpiexec()
    if mpiexec is None:
        parser.error("mpiexec not found: `pip install mpich`, or put your MPI's bin folder on PATH")
    try:
        cmd = local_command(ns.script, ns.args, ns.np, mpiexec=mpiexec, python=ns.python,
                            entry=ns.entry)
    except ValueError as exc:
        parser.error(str(exc))
    if ns.dry_run:
        print(shlex.join(cmd))
        return 0
    if not os.path.exists(ns.script):
        parser.error(f"no such script: {ns.script}")
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)
    return 127  # pragma: no cover - execvp does not return


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command == "run":
        return _run(ns, parser)
    try:
        text = render_sbatch(_spec(ns))
    except ValueError as exc:
        parser.error(str(exc))
    if ns.command == "render" or ns.dry_run:
        sys.stdout.write(text)
        return 0
    path = ns.script_file or f"{ns.job_name}.sbatch"
    with open(path, "w") as f:
        f.write(text)
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        print(f"mpiray: wrote {path}, but sbatch is not on PATH; submit it on a login node "
              f"with: sbatch {path}", file=sys.stderr)
        return 1
    done = subprocess.run([sbatch, path], check=False)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
