"""The three ways to start, shutdown without leftovers, and failure of the driver."""

import sys
from pathlib import Path

from conftest import mpiexec, run, run_mpi, run_python

APPS = Path(__file__).with_name("apps")


def check_clean(result):
    assert result.returncode == 0, result
    assert result.leftovers() == [], "processes of the job are still running"


def test_mpiexec_launch():
    r = run_mpi(str(APPS / "ray_script.py"), 3)
    check_clean(r)
    assert "SUM 285" in r.stdout and "NODES 2" in r.stdout, r


def test_embedded_launch():
    r = run_python(str(APPS / "ray_script.py"))
    check_clean(r)
    assert "SUM 285" in r.stdout and "NODES 1" in r.stdout, r


def test_python_m_mpiray_in_current_world():
    r = run([mpiexec(), "-n", "3", sys.executable, "-m", "mpiray", str(APPS / "no_init.py")])
    check_clean(r)
    assert "RANKS [1, 2]" in r.stdout, r


def test_python_m_mpiray_with_n():
    r = run([sys.executable, "-m", "mpiray", "-n", "3", str(APPS / "no_init.py")])
    check_clean(r)
    assert "RANKS [1, 2]" in r.stdout, r


def test_python_m_mpiray_embedded_accepts_scripts_own_init():
    r = run([sys.executable, "-m", "mpiray", str(APPS / "ray_script.py")])
    check_clean(r)
    assert "SUM 285" in r.stdout, r


def test_simulated_nodes_in_embedded_mode():
    code = ("import mpiray as ray; ray.init(num_cpus=1, num_nodes=3, resources={'nvme': 2}); "
            "n = ray.nodes(); print('N', len(n), ray.cluster_resources()['CPU'], "
            "ray.cluster_resources()['nvme'])")
    r = run([sys.executable, "-c", code])
    check_clean(r)
    assert "N 3 3 6" in r.stdout, r


def test_uncaught_driver_exception_ends_job_nonzero_under_mpiexec():
    r = run_mpi(str(APPS / "driver_raises.py"), 3, "mpi", timeout=60)
    assert r.returncode != 0, r
    assert "driver bug mpi" in r.stderr
    assert r.leftovers() == []


def test_uncaught_driver_exception_ends_embedded_job_nonzero():
    r = run_python(str(APPS / "driver_raises.py"), "embedded", timeout=60)
    assert r.returncode != 0, r
    assert "driver bug embedded" in r.stderr
    assert r.leftovers() == []


def test_shutdown_then_reinit():
    r = run_python(str(APPS / "shutdown_then_work.py"))
    check_clean(r)
    assert "AFTER_SHUTDOWN True" in r.stdout and "SECOND 2" in r.stdout, r


def test_idle_cluster_does_not_spin():
    r = run_python(str(APPS / "idle.py"), env={"NODES": "2"})
    check_clean(r)
    frac = float(r.stdout.split("IDLE_CPU_FRACTION")[1].split()[0])
    # a busy-waiting loop anywhere would cost a whole core (1.0)
    assert frac < 0.1, f"idle cluster used {frac:.1%} of a core"


def test_ranks_of_a_host_listen_for_wake_ups_and_leave_nothing():
    r = run_python(str(APPS / "wake_pipes.py"), timeout=90)
    assert r.returncode == 0, r
    assert "PIPES .wake-r0 .wake-r1 .wake-r2" in r.stdout, r
    assert "FOLDER_LEFT False" in r.stdout, r
    assert not r.leftovers(), r.leftovers()


def test_the_worker_started_ahead_of_the_job_runs_tasks_and_none_is_left():
    r = run_python(str(APPS / "early_worker.py"), timeout=90)
    assert r.returncode == 0, r
    assert "WORKERS 2 CHILDREN 2 SAME True AHEAD 1" in r.stdout, r
    assert not r.leftovers(), r.leftovers()


def test_an_idle_one_host_cluster_wakes_a_few_times_a_second_at_most():
    r = run_python(str(APPS / "idle_wakes.py"), timeout=90)
    assert r.returncode == 0, r
    words = r.stdout.split()
    raylet = int(words[words.index("RAYLET_WAKES") + 1])
    rank0 = int(words[words.index("RANK0_WAKES") + 1])
    # 3 s asleep: ~6 wake-ups each (polling every 50 ms was ~60)
    assert raylet <= 20 and rank0 <= 25, r.stdout
