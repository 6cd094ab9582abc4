"""Submit real batch jobs and wait for them, every wait with a deadline (no mocks)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "slurm"
PROBE = Path(__file__).with_name("apps") / "probe.py"
CMD_TIMEOUT = 30  # seconds for any one Slurm command


def job_env(marker: str) -> dict[str, str]:
    """The caller's environment (sbatch exports it) with this Python first on PATH."""
    env = dict(os.environ, PYTHON=sys.executable, MPIRAY_TEST_MARKER=marker,
               PYTHONUNBUFFERED="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def slurm(*cmd: str, env: dict | None = None, cwd: Path | None = None) -> str:
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=CMD_TIMEOUT,
                          env=env, cwd=cwd)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def submit(script: Path, *args: str, sbatch_opts: tuple[str, ...] = (), cwd: Path,
           env: dict) -> str:
    """``sbatch [opts] script args`` from ``cwd`` (the submit directory); returns the job id."""
    out = slurm("sbatch", "--parsable", *sbatch_opts, str(script), *args, env=env, cwd=cwd)
    job = out.strip().split(";")[0]
    assert job.isdigit(), f"sbatch said {out!r}"
    return job


@dataclass
class Finished:
    job: str
    state: str
    exit_code: str  # "rc:signal"
    output: str
    seconds: float

    def __str__(self) -> str:
        return (f"job {self.job}: {self.state} exit {self.exit_code} after {self.seconds:.1f}s\n"
                f"--- output\n{self.output}")


def in_queue(job: str) -> bool:
    return bool(slurm("squeue", "-h", "-j", job, "-o", "%T").strip())


#: Slurm 22.05's pmi2 server now and then garbles MPICH's large start-up messages;
#: the step then hangs in MPI_Init, or MPI_Init fails (docs/slurm.md, "Known problems").
PMI2_GARBLED = "mpi/pmi2: invalid client request"


def wait_gone(job: str, deadline: float, watch: Callable[[], Path] | None = None) -> bool:
    """Poll squeue (backing off) until the job left the queue; scancel and fail at the deadline.

    With ``watch`` (returns the job's output file), a garbled PMI-2 start-up cancels the
    job early and returns False instead of waiting for the deadline.
    """
    end, pause = time.monotonic() + deadline, 0.1
    while in_queue(job):
        if watch is not None and watch().exists() and PMI2_GARBLED in watch().read_text():
            subprocess.run(["scancel", job], timeout=CMD_TIMEOUT, check=False)
            wait_gone(job, 30)
            return False
        if time.monotonic() > end:
            subprocess.run(["scancel", job], timeout=CMD_TIMEOUT, check=False)
            pytest.fail(f"job {job} still queued or running after {deadline}s; cancelled it")
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)
    return True


def final_state(job: str) -> tuple[str, str]:
    """(state, exit code) from the job completion log that ``sacct -c`` reads."""
    end = time.monotonic() + 15
    while True:
        out = slurm("sacct", "-c", "-j", job, "-n", "-P", "-o", "jobid,state,exitcode")
        for line in out.splitlines():
            fields = line.split("|")
            if fields[0] == job:
                return fields[1], fields[2]
        if time.monotonic() > end:
            pytest.fail(f"sacct -c has no record of job {job}: {out!r}")
        time.sleep(0.2)


def output_file(cwd: Path, job: str) -> Path:
    found = sorted(cwd.glob(f"*-{job}.out"))
    return found[0] if found else cwd / f"missing-{job}.out"  # not written yet


def run_job(script: Path, *args: str, sbatch_opts: tuple[str, ...] = (), cwd: Path,
            env: dict, deadline: float = 90) -> Finished:
    """Submit, wait, and collect; resubmits (up to twice) if Slurm's PMI-2 server garbled
    the start-up, which it does now and then under load (see docs/slurm.md)."""
    t0 = time.monotonic()
    for attempt in (1, 2, 3):
        job = submit(script, *args, sbatch_opts=sbatch_opts, cwd=cwd, env=env)
        if wait_gone(job, deadline, watch=(lambda: output_file(cwd, job)) if attempt < 3 else None):
            out = output_file(cwd, job)
            # the same garbling can also make MPI_Init fail at once instead of hanging
            if attempt == 3 or not (out.exists() and PMI2_GARBLED in out.read_text()
                                    and "MPI_Init" in out.read_text()):
                break
        print(f"job {job}: Slurm's pmi2 server garbled MPI start-up; resubmitting")
    state, code = final_state(job)
    out = output_file(cwd, job)
    text = out.read_text() if out.exists() else f"(no output file {out.name} in {cwd})"
    return Finished(job, state, code, text, time.monotonic() - t0)


def wait_for_text(path_of, text: str, deadline: float) -> str:
    """Wait until the file ``path_of()`` names holds ``text``; fail at the deadline."""
    end, pause = time.monotonic() + deadline, 0.1
    while True:
        path = path_of()
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        if time.monotonic() > end:
            pytest.fail(f"{text!r} did not appear in {path} within {deadline}s:\n{content}")
        time.sleep(pause)
        pause = min(pause * 1.5, 1.0)


def processes_with_marker(marker: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of live processes whose command line or environment holds ``marker``."""
    found, me = [], os.getpid()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                if f.read().rsplit(") ", 1)[1].startswith("Z"):
                    continue
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if marker in cmd or f"MPIRAY_TEST_MARKER={marker}".encode() in env:
            found.append((int(d), cmd))
    return found


def probe_lines(output: str) -> dict[str, str]:
    """``PROBE a=1 b=2`` lines as one dict (later lines win)."""
    values: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("PROBE "):
            values.update(re.findall(r"(\w+)=(\S*)", line))
    return values
