"""Batch scripts for Slurm: ``JobSpec`` in, script text out (``render_sbatch``).

The rank layout (docs/slurm.md explains why)::

    node 0: rank 0 = driver  + raylets 1..K      K = 1 (one raylet per node)
    node 1: raylets K+1..2K                        or GPUs per node (one per GPU)
    ...
    allocation: --nodes=N --ntasks-per-node=K --cpus-per-task=C [--gres=gpu:G]
    step:       N*K+1 tasks, --overcommit, placed by SLURM_HOSTFILE

Pure: rendering reads the packaged template and nothing else.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from importlib import resources
from typing import Mapping

from ._commands import ENTRIES, LAUNCHERS, SRUN_MPI, step_command

RAYLET_LAYOUTS = ("node", "gpu")
GPU_FLAGS = ("gres", "gpus-per-node")
_TIME = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$")
_MEM = re.compile(r"^\d+[KMGT]?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything a batch script needs; invalid combinations fail at construction."""

    script: str
    args: tuple[str, ...] = ()
    nodes: int = 1
    gpus_per_node: int = 0
    raylet_per: str = "node"          # "node": one raylet per node; "gpu": one per GPU
    cpus_per_raylet: int | None = None  # --cpus-per-task
    mem: str | None = None              # --mem, per node (e.g. "64G")
    time: str = "01:00:00"
    job_name: str = "mpiray"
    output: str = "%x-%j.out"           # relative: lands in the submit directory
    partition: str | None = None
    account: str | None = None
    gpu_flag: str = "gres"              # "gres": --gres=gpu:G; "gpus-per-node": --gpus-per-node=G
    launcher: str = "srun"              # or "mpiexec" inside the allocation
    mpi: str = "mpich"                  # srun --mpi=pmi2; "openmpi": --mpi=pmix
    python: str = "python"
    entry: str = "script"               # "module": python -m mpiray app.py
    mpiexec: str = "mpiexec"
    setup: tuple[str, ...] = ()         # shell lines before the launch (module load ...)
    env: tuple[tuple[str, str], ...] = ()  # exported before the launch (MPIRAY_* ...)
    sbatch_options: tuple[str, ...] = ()   # extra "--opt=value" lines

    def __post_init__(self) -> None:
        def whole(name: str, value: object, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}={value!r}: expected a whole number >= {minimum}")

        def choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
            if value not in allowed:
                raise ValueError(f"{name}={value!r}: expected one of {', '.join(allowed)}")

        whole("nodes", self.nodes, 1)
        whole("gpus_per_node", self.gpus_per_node, 0)
        if self.cpus_per_raylet is not None:
            whole("cpus_per_raylet", self.cpus_per_raylet, 1)
        choice("raylet_per", self.raylet_per, RAYLET_LAYOUTS)
        choice("gpu_flag", self.gpu_flag, GPU_FLAGS)
        choice("launcher", self.launcher, LAUNCHERS)
        choice("mpi", self.mpi, tuple(SRUN_MPI))
        choice("entry", self.entry, ENTRIES)
        if self.raylet_per == "gpu" and self.gpus_per_node < 1:
            raise ValueError("raylet_per='gpu' needs gpus_per_node >= 1 (one raylet per GPU)")
        if not _TIME.match(self.time):
            raise ValueError(f"time={self.time!r}: expected Slurm's [D-]HH:MM:SS, MM:SS or minutes")
        if self.mem is not None and not _MEM.match(self.mem):
            raise ValueError(f"mem={self.mem!r}: expected a size such as 4000, 64G or 512M")
        if not self.script:
            raise ValueError("script: the Python script to run is empty")
        for name, _ in self.env:
            if not _ENV_NAME.match(name):
                raise ValueError(f"env: {name!r} is not a valid environment variable name")
        for text in (self.job_name, self.output, self.partition or "", self.account or "",
                     *self.sbatch_options):
            if "\n" in text:
                raise ValueError(f"{text!r}: a #SBATCH value cannot hold a newline")

    @property
    def raylets_per_node(self) -> int:
        return self.gpus_per_node if self.raylet_per == "gpu" else 1

    @property
    def ranks(self) -> int:
        """MPI ranks of the step: one driver plus every raylet."""
        return self.nodes * self.raylets_per_node + 1

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> "JobSpec":
        """Build from loose values (lists become tuples, ``env`` may be a dict)."""
        fixed = dict(values)
        for key in ("args", "setup", "sbatch_options"):
            if key in fixed:
                fixed[key] = tuple(fixed[key])  # type: ignore[arg-type]
        if isinstance(fixed.get("env"), Mapping):
            fixed["env"] = tuple(fixed["env"].items())  # type: ignore[union-attr]
        return cls(**fixed)  # type: ignore[arg-type]


def sbatch_options(spec: JobSpec) -> list[str]:
    """The ``#SBATCH`` options, in the order they are written."""
    opts = [f"--job-name={spec.job_name}"]
    if spec.partition:
        opts.append(f"--partition={spec.partition}")
    if spec.account:
        opts.append(f"--account={spec.account}")
    opts += [f"--nodes={spec.nodes}", f"--ntasks-per-node={spec.raylets_per_node}"]
    if spec.cpus_per_raylet is not None:
        opts.append(f"--cpus-per-task={spec.cpus_per_raylet}")
    if spec.gpus_per_node:
        opts.append(f"--gres=gpu:{spec.gpus_per_node}" if spec.gpu_flag == "gres"
                    else f"--gpus-per-node={spec.gpus_per_node}")
    if spec.mem is not None:
        opts.append(f"--mem={spec.mem}")
    opts += [f"--time={spec.time}", f"--output={spec.output}", *spec.sbatch_options]
    return opts


def _shape(spec: JobSpec) -> str:
    per = "raylet" if spec.raylets_per_node == 1 else "raylets"
    how = " (one per GPU)" if spec.raylet_per == "gpu" else ""
    nodes = "node" if spec.nodes == 1 else "nodes"
    return (f"{spec.nodes} {nodes} x {spec.raylets_per_node} {per}{how} + 1 driver"
            f" = {spec.ranks} MPI ranks")


def _launch(spec: JobSpec) -> str:
    cmd = " ".join(step_command(spec.script, spec.args, launcher=spec.launcher, mpi=spec.mpi,
                                python=spec.python, entry=spec.entry, mpiexec=spec.mpiexec))
    if spec.launcher == "mpiexec":
        return ("# mpiexec inside the allocation: Hydra (MPICH) starts its proxies through\n"
                "# Slurm and fills node 0 first, so the driver shares the first node.\n"
                f"{cmd}")
    other = "pmix" if spec.mpi == "mpich" else "pmi2"
    family = "Open MPI" if spec.mpi == "mpich" else "MPICH"
    return ("# the driver and node 0's raylets on the first node, then K raylets per node\n"
            "HOSTS=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\")\n"
            "export SLURM_HOSTFILE=\"${TMPDIR:-/tmp}/mpiray-hosts-$SLURM_JOB_ID\"\n"
            "{ head -n 1 <<< \"$HOSTS\"\n"
            "  for h in $HOSTS; do for ((i = 0; i < RAYLETS_PER_NODE; i++)); do echo \"$h\"; done; done\n"
            "} > \"$SLURM_HOSTFILE\"\n"
            "trap 'rm -f \"$SLURM_HOSTFILE\"' EXIT\n"
            f"# {family}: --mpi={other}. Or, inside the allocation: mpiexec -n \"$NRANKS\" ...\n"
            f"{cmd}")


def render_sbatch(spec: JobSpec) -> str:
    """The batch script for ``spec``, ending in a newline."""
    setup = [*spec.setup, *(f"export {k}={shlex.quote(v)}" for k, v in spec.env)]
    template = resources.files(__package__).joinpath("templates/job.sbatch").read_text()
    fields = {
        "NAME": spec.job_name,
        "SHAPE": _shape(spec),
        "SBATCH": "\n".join(f"#SBATCH {o}" for o in sbatch_options(spec)),
        "SETUP": "".join(f"{line}\n" for line in setup),
        "RAYLETS_PER_NODE": str(spec.raylets_per_node),
        "LAUNCH": _launch(spec),
    }
    for key, value in fields.items():
        template = template.replace("{{" + key + "}}", value)
    if "{{" in template:
        raise RuntimeError(f"template field left unfilled: {template[template.index('{{'):][:40]}")
    return template
