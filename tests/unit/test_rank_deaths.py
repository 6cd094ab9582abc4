"""Naming the rank whose death ended a job: pidfd watching, with real processes (no MPI)."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from mpiray import _supervise, _watchdog

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfds (Linux 5.3+)")]


def sleepers(n):
    return [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(n)]


def test_first_death_is_named_with_its_signal():
    procs = sleepers(3)
    try:
        import select

        deaths = _watchdog.RankDeaths([(r + 1, p.pid, "h") for r, p in enumerate(procs)])
        poller = select.poll()
        deaths.register(poller)
        procs[1].send_signal(signal.SIGSEGV)
        ready = {fd for fd, _ in poller.poll(10_000)}
        assert deaths.seen(ready, poller)
        text = deaths.first()
        assert text.startswith(f"rank 2 (host h, pid {procs[1].pid}) died"), text
        assert "signal 11" in text and "SIGSEGV" in text, text
        procs[0].kill()
        deaths.seen({fd for fd, _ in poller.poll(10_000)}, poller)
        assert deaths.first().endswith("then rank(s) 1"), deaths.first()
        deaths.close()
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_no_death_no_words():
    deaths = _watchdog.RankDeaths([(1, os.getpid(), "h")])
    assert deaths.first() == ""
    deaths.close()


def test_supervisor_names_the_rank_that_died_first(tmp_path):
    # a stand-in for mpiexec: writes the rank table like rank 0 would, then one "rank" dies
    # and the "launcher" kills the others, as MPICH's mpiexec does
    host = socket.gethostname()
    fake = tmp_path / "fake_mpiexec.py"
    fake.write_text(f"""
import json, os, signal, subprocess, sys, time
kids = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(2)]
table = [[0, os.getpid(), {host!r}]] + [[r + 1, k.pid, {host!r}] for r, k in enumerate(kids)]
with open(os.environ["{_supervise.TABLE_ENV}"], "w") as f:
    json.dump(table, f)
time.sleep(0.5)
kids[1].kill()
kids[1].wait()
time.sleep(0.2)
kids[0].kill()
kids[0].wait()
sys.exit(9)
""")
    out = subprocess.run([sys.executable, "-c", "import sys; from mpiray._supervise import run_supervised; "
                          f"sys.exit(run_supervised([sys.executable, {str(fake)!r}]))"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 9, out
    assert f"failed because rank 2 (host {host}" in out.stderr, out
    assert re.search(r"then rank\(s\) (0, )?1\.", out.stderr), out  # rank 0 = the stand-in, ending last


def test_supervisor_is_silent_when_the_job_succeeds(tmp_path):
    out = subprocess.run([sys.executable, "-c", "import sys; from mpiray._supervise import run_supervised; "
                          "sys.exit(run_supervised([sys.executable, '-c', 'print(42)']))"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout == "42\n" and out.stderr == "", out


def test_rank_table_is_written_only_under_the_supervisor(tmp_path, monkeypatch):
    monkeypatch.delenv(_supervise.TABLE_ENV, raising=False)
    _supervise.write_rank_table([(0, 1, "h")])  # nothing to do, no error
    path = tmp_path / "t.json"
    monkeypatch.setenv(_supervise.TABLE_ENV, str(path))
    _supervise.write_rank_table([(0, 1, "h"), (1, 2, "h")])
    assert json.loads(path.read_text()) == [[0, 1, "h"], [1, 2, "h"]]


def test_watchdog_speaks_only_when_the_driver_dies_after_a_rank():
    def run(kill_driver: bool, say_bye: bool):
        driver, rank = sleepers(2)
        dog = subprocess.Popen([sys.executable, "-S", "-I", _watchdog.__file__, str(driver.pid),
                                f"1:{rank.pid}:h"], stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        if say_bye:
            dog.stdin.write(b"bye")
            dog.stdin.flush()
        rank.kill()
        rank.wait()
        if kill_driver:
            driver.kill()
        driver.wait(timeout=0.1) if kill_driver else None
        dog.stdin.close()
        err = dog.stderr.read().decode()
        dog.wait(timeout=10)
        driver.kill()
        driver.wait()
        return err, rank.pid

    err, pid = run(kill_driver=True, say_bye=False)
    assert f"rank 1 (host h, pid {pid}) died" in err and "ended the whole job" in err, err
    assert run(kill_driver=True, say_bye=True)[0] == ""   # clean end, or the driver spoke itself
    assert run(kill_driver=False, say_bye=False)[0] == ""  # the driver outlived it and reports it
