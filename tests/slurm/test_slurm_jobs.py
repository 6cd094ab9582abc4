"""End to end on a real Slurm cluster: sbatch the templates and rendered scripts with mpiray.

Needs the single-node test cluster (``sudo slurm/ci-cluster-start.sh``: 4 CPUs,
2 fake GPUs, MpiDefault=pmi2); conftest.py skips these tests without one.
Every job runs the probe program with the Python running pytest and checks
world size, resources, GPUs reaching tasks and a clean exit.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mpiray._store.shm import default_root, sweep_stale
from mpiray.launch import JobSpec, render_sbatch
from mpich_leftovers import mpich_segments, remove_unmapped
from slurm_jobs import (CMD_TIMEOUT, PROBE, TEMPLATES, job_env, output_file, probe_lines,
                        processes_with_marker, run_job, slurm, submit, wait_for_text, wait_gone,
                        final_state)

pytestmark = pytest.mark.slurm


@pytest.fixture
def marker() -> str:
    return f"mpiray-slurm-test-{uuid.uuid4().hex}"


def check_ok(done, raylets: int) -> dict[str, str]:
    assert done.state == "COMPLETED" and done.exit_code == "0:0", str(done)
    assert "PROBE done" in done.output, str(done)
    probe = probe_lines(done.output)
    assert probe["world_size"] == str(raylets + 1), str(done)
    assert probe["raylets"] == str(raylets), str(done)
    return probe


def gpu_lines(output: str) -> list[str]:
    return sorted(line.split("CUDA_VISIBLE_DEVICES=")[1].split()[0]
                  for line in output.splitlines() if line.startswith("PROBE gpu_task"))


def test_single_node_template(tmp_path, marker):
    done = run_job(TEMPLATES / "single-node.sbatch", str(PROBE), "--raylets", "1",
                   "--cpus", "2", "--marker", marker, sbatch_opts=("--cpus-per-task=2",),
                   cwd=tmp_path, env=job_env(marker))
    probe = check_ok(done, raylets=1)
    assert probe["slurm_job"] == done.job
    assert output_file(tmp_path, done.job).name == f"mpiray-{done.job}.out"
    assert processes_with_marker(marker) == []


def test_multi_node_cpu_template(tmp_path, marker):
    # one node here; the template's host file still places driver + raylets
    done = run_job(TEMPLATES / "multi-node-cpu.sbatch", str(PROBE), "--raylets", "2",
                   "--cpus", "2", "--marker", marker,
                   sbatch_opts=("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"),
                   cwd=tmp_path, env=job_env(marker))
    check_ok(done, raylets=2)
    assert processes_with_marker(marker) == []


def test_multi_node_gpu_template_gives_each_task_a_gpu(tmp_path, marker):
    done = run_job(TEMPLATES / "multi-node-gpu.sbatch", str(PROBE), "--raylets", "2",
                   "--gpus", "2", "--marker", marker,
                   sbatch_opts=("--nodes=1", "--ntasks-per-node=2", "--gres=gpu:2",
                                "--cpus-per-task=1"),
                   cwd=tmp_path, env=job_env(marker))
    probe = check_ok(done, raylets=2)
    assert probe["gpus"] == "2"
    assert gpu_lines(done.output) == ["0", "1"], str(done)
    assert "gpu_ids=[0]" in done.output and "gpu_ids=[1]" in done.output, str(done)


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_rendered_script(tmp_path, marker, launcher):
    spec = JobSpec(script=str(PROBE), args=("--raylets", "1", "--gpus", "1", "--cpus", "2",
                                            "--marker", marker),
                   gpus_per_node=1, cpus_per_raylet=2, mem="512M", time="00:05:00",
                   job_name=f"render-{launcher}", launcher=launcher, python=sys.executable,
                   mpiexec=str(Path(sys.executable).with_name("mpiexec")))
    batch = tmp_path / "job.sbatch"
    batch.write_text(render_sbatch(spec))
    done = run_job(batch, cwd=tmp_path, env=job_env(marker))
    probe = check_ok(done, raylets=1)
    assert probe["gpus"] == "1" and gpu_lines(done.output) == ["0"], str(done)
    assert processes_with_marker(marker) == []


def test_cli_sbatch_submits(tmp_path, marker):
    cmd = [sys.executable, "-m", "mpiray.launch.cli", "sbatch", "-N", "1", "--raylet-per", "gpu",
           "--gpus-per-node", "2", "-c", "1", "-t", "5", "-J", "cli", "--script-file",
           "cli.sbatch", str(PROBE), "--raylets", "2", "--gpus", "2", "--marker", marker]
    sub = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT,
                         cwd=tmp_path, env=job_env(marker))
    assert sub.returncode == 0, sub.stderr
    assert (tmp_path / "cli.sbatch").exists()
    job = sub.stdout.split()[-1]
    assert sub.stdout.startswith("Submitted batch job") and job.isdigit(), sub.stdout
    wait_gone(job, 90)
    state, code = final_state(job)
    text = output_file(tmp_path, job).read_text()
    assert (state, code) == ("COMPLETED", "0:0"), text
    assert probe_lines(text)["world_size"] == "3" and gpu_lines(text) == ["0", "1"], text


def test_impossible_request_fails_at_submit(tmp_path, marker):
    # EnforcePartLimits=ALL: a request no node can hold is an error, not a job pending forever
    done = subprocess.run(["sbatch", "--gres=gpu:64", str(TEMPLATES / "single-node.sbatch")],
                          capture_output=True, text=True, timeout=CMD_TIMEOUT, cwd=tmp_path,
                          env=job_env(marker))
    assert done.returncode != 0 and "error" in done.stderr.lower(), done


def test_scancel_leaves_no_process_behind(tmp_path, marker):
    before = mpich_segments()
    try:
        check_scancel(tmp_path, marker)
    finally:  # a cancelled step cannot remove MPICH's segments or mpiray's store folders
        remove_unmapped(mpich_segments() - before)
        sweep_stale(default_root(), min_age=0)


def check_scancel(tmp_path, marker):
    env = job_env(marker)
    job = submit(TEMPLATES / "multi-node-cpu.sbatch", str(PROBE), "--raylets", "2",
                 "--sleep", "600", "--marker", marker,
                 sbatch_opts=("--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1"),
                 cwd=tmp_path, env=env)
    try:
        wait_for_text(lambda: output_file(tmp_path, job), "PROBE sleeping", deadline=60)
        running = processes_with_marker(marker)
        # batch shell, srun, driver, 2 raylets, their workers: all carry the marker
        assert len(running) >= 4, running
    finally:
        t0 = time.monotonic()
        slurm("scancel", job)
    wait_gone(job, 60)
    state, _ = final_state(job)
    assert state == "CANCELLED", state
    end = time.monotonic() + 20
    while (left := processes_with_marker(marker)) and time.monotonic() < end:
        time.sleep(0.2)
    assert left == [], f"left behind {time.monotonic() - t0:.1f}s after scancel: {left}"
