"""Golden files for rendered batch scripts and command lines; no Slurm or MPI needed.

Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/launch``
and review the diff.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mpiray.launch import JobSpec, local_command, render_sbatch, step_command

GOLDEN = Path(__file__).with_name("golden")

SPECS = {
    "single_node": JobSpec(script="app.py"),
    "multi_node_cpu": JobSpec(script="app.py", args=("--steps", "10", "a b"), nodes=4,
                              cpus_per_raylet=32, mem="200G", time="12:00:00",
                              job_name="sweep", partition="cpu", account="proj42"),
    "multi_node_gpu_per_gpu": JobSpec(
        script="train.py", nodes=2, gpus_per_node=4, raylet_per="gpu", cpus_per_raylet=8,
        mem="256G", time="02:00:00", job_name="train", python="/opt/venv/bin/python",
        setup=("module load cray-mpich", "source /opt/venv/bin/activate"),
        env=(("MPICH_GPU_SUPPORT_ENABLED", "1"), ("MPIRAY_OBJECT_STORE_MEMORY", "8000000000"))),
    "gpu_node_openmpi": JobSpec(script="app.py", nodes=2, gpus_per_node=2,
                                gpu_flag="gpus-per-node", mpi="openmpi", cpus_per_raylet=16),
    "mpiexec_module": JobSpec(script="ray_script.py", nodes=3, launcher="mpiexec",
                              entry="module", mpiexec="/opt/mpich/bin/mpiexec",
                              sbatch_options=("--qos=debug", "--exclusive")),
}

#: the CLI arguments that must render exactly like SPECS[name]
CLI_ARGS = {
    "multi_node_gpu_per_gpu": [
        "--nodes", "2", "--gpus-per-node", "4", "--raylet-per", "gpu", "--cpus-per-raylet", "8",
        "--mem", "256G", "--time", "02:00:00", "--job-name", "train",
        "--python", "/opt/venv/bin/python", "--setup", "module load cray-mpich",
        "--setup", "source /opt/venv/bin/activate", "--env", "MPICH_GPU_SUPPORT_ENABLED=1",
        "--env", "MPIRAY_OBJECT_STORE_MEMORY=8000000000", "train.py"],
    "multi_node_cpu": [
        "-N", "4", "-c", "32", "--mem", "200G", "-t", "12:00:00", "-J", "sweep", "-p", "cpu",
        "-A", "proj42", "--python", "python", "app.py", "--steps", "10", "a b"],
    "mpiexec_module": [
        "-N", "3", "--launcher", "mpiexec", "-m", "--mpiexec", "/opt/mpich/bin/mpiexec",
        "--sbatch-option=--qos=debug", "--sbatch-option=--exclusive", "--python", "python",
        "ray_script.py"],
}


def golden(name: str, text: str) -> str:
    path = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    return path.read_text()


def cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "mpiray.launch.cli", *args],
                          capture_output=True, text=True, timeout=30, cwd=cwd, env=env)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_render_matches_golden(name):
    text = render_sbatch(SPECS[name])
    assert text == golden(name, text)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_script_is_valid_bash(name, tmp_path):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    path = tmp_path / "job.sbatch"
    path.write_text(render_sbatch(SPECS[name]))
    done = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", sorted(CLI_ARGS))
def test_cli_dry_run_prints_golden(name):
    done = cli("sbatch", "--dry-run", *CLI_ARGS[name])
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / f"{name}.sbatch").read_text()


def test_cli_render_prints_golden():
    done = cli("render", *CLI_ARGS["multi_node_cpu"])
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / "multi_node_cpu.sbatch").read_text()


def test_cli_sbatch_dry_run_writes_nothing(tmp_path):
    done = cli("sbatch", "--dry-run", "--python", "python", "app.py", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("#!/bin/bash"), done.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_sbatch_without_slurm_writes_script_and_says_so(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path))  # no sbatch on this PATH
    done = cli("sbatch", "-J", "nosl", "--python", "python", "app.py", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert "sbatch is not on PATH" in done.stderr and "sbatch nosl.sbatch" in done.stderr
    assert (tmp_path / "nosl.sbatch").read_text() == render_sbatch(
        JobSpec(script="app.py", job_name="nosl"))


def test_spec_properties():
    spec = SPECS["multi_node_gpu_per_gpu"]
    assert (spec.raylets_per_node, spec.ranks) == (4, 9)
    assert (SPECS["multi_node_cpu"].raylets_per_node, SPECS["multi_node_cpu"].ranks) == (1, 5)
    loose = JobSpec.from_mapping({"script": "a.py", "args": ["x"], "env": {"A": "1"}})
    assert loose.args == ("x",) and loose.env == (("A", "1"),)


@pytest.mark.parametrize("bad, message", [
    ({"nodes": 0}, "nodes=0"),
    ({"nodes": True}, "nodes=True"),
    ({"gpus_per_node": -1}, "gpus_per_node=-1"),
    ({"raylet_per": "gpu"}, "needs gpus_per_node >= 1"),
    ({"raylet_per": "socket"}, "raylet_per='socket'"),
    ({"cpus_per_raylet": 0}, "cpus_per_raylet=0"),
    ({"launcher": "aprun"}, "launcher='aprun'"),
    ({"mpi": "intel"}, "mpi='intel'"),
    ({"gpu_flag": "gpus"}, "gpu_flag='gpus'"),
    ({"time": "1 hour"}, "time='1 hour'"),
    ({"mem": "lots"}, "mem='lots'"),
    ({"env": (("1BAD", "x"),)}, "not a valid environment variable name"),
    ({"job_name": "a\nb"}, "newline"),
    ({"entry": "exe"}, "entry='exe'"),
])
def test_spec_rejects(bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        JobSpec(script="app.py", **bad)


def test_cli_rejects_bad_spec_with_usage_error():
    done = cli("render", "--raylet-per", "gpu", "app.py")
    assert done.returncode == 2 and "needs gpus_per_node >= 1" in done.stderr


def test_local_command():
    assert local_command("app.py", ["--x", "1"], 4) == ["mpiexec", "-n", "4", "python", "app.py",
                                                       "--x", "1"]
    assert local_command("app.py", ranks=3, mpiexec="/m/mpiexec", python="/v/python",
                         entry="module") == ["/m/mpiexec", "-n", "3", "/v/python", "-m", "mpiray",
                                             "app.py"]
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="at least 2"):
            local_command("app.py", ranks=bad)


def test_step_command():
    assert step_command("a b.py", ["x"]) == [
        "srun", "--mpi=pmi2", "--overcommit", '--ntasks="$NRANKS"', "--distribution=arbitrary",
        "python", "'a b.py'", "x"]
    assert step_command("a.py", mpi="openmpi")[1] == "--mpi=pmix"
    assert step_command("a.py", launcher="mpiexec", ranks="5", mpi="openmpi") == [
        "mpiexec", "-n", "5", "--oversubscribe", "python", "a.py"]


def test_cli_run_dry_run_and_errors():
    done = cli("run", "-n", "3", "--dry-run", "--mpiexec", "/m/mpiexec", "--python", "py",
               "app.py", "--flag", "a b")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/m/mpiexec -n 3 py app.py --flag 'a b'\n"
    done = cli("run", "-n", "1", "--mpiexec", "/m/mpiexec", "app.py")
    assert done.returncode == 2 and "at least 2" in done.stderr
    done = cli("run", "-n", "2", "--mpiexec", "/m/mpiexec", "no-such-script.py")
    assert done.returncode == 2 and "no such script" in done.stderr


def test_launch_module_does_not_import_mpi():
    code = ("import sys, mpiray.launch, mpiray.launch.cli; "
            "print('mpi4py' in sys.modules or 'mpi4py.MPI' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "False", done.stderr
