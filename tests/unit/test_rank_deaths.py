"""Naming the rank whose death ended a job: the watchdog, with real processes (no MPI)."""

import os
import select
import signal
import subprocess
import sys
import uuid

import pytest

from mpiray import _watchdog

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfds (Linux 5.3+)")]

RANK = """
import sys, time
sys.path.insert(0, {root!r})
from mpiray._watchdog import connect
s = connect({session!r})
assert s is not None
print("connected", flush=True)
time.sleep(60)
"""


def start_ranks(session, n):
    root = os.path.dirname(os.path.dirname(_watchdog.__file__))
    procs = [subprocess.Popen([sys.executable, "-c", RANK.format(root=root, session=session)],
                              stdout=subprocess.PIPE) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline() == b"connected\n"
    return procs


def test_first_death_is_named_with_its_signal():
    session = uuid.uuid4().hex
    listener = _watchdog.listen(session)
    procs = start_ranks(session, 3)
    try:
        deaths = _watchdog.RankDeaths({p.pid: (r + 1, "h") for r, p in enumerate(procs)})
        poller = select.poll()
        listener.setblocking(False)
        deaths.accept(listener, poller)
        assert len(deaths.conns) == 3
        procs[1].send_signal(signal.SIGSEGV)
        assert deaths.seen({fd for fd, _ in poller.poll(10_000)}, poller)
        text = deaths.first()
        assert text.startswith(f"rank 2 (host h, pid {procs[1].pid}) died"), text
        assert "signal 11" in text and "SIGSEGV" in text, text
        procs[0].kill()
        deaths.seen({fd for fd, _ in poller.poll(10_000)}, poller)
        assert deaths.first().endswith("then rank(s) 1"), deaths.first()
    finally:
        listener.close()
        for p in procs:
            p.kill()
            p.wait()


def test_strangers_and_no_deaths():
    session = uuid.uuid4().hex
    listener = _watchdog.listen(session)
    procs = start_ranks(session, 1)
    try:
        deaths = _watchdog.RankDeaths({})  # a connection from a process that is not a rank
        poller = select.poll()
        listener.setblocking(False)
        deaths.accept(listener, poller)
        assert deaths.conns == {} and deaths.first() == ""
    finally:
        listener.close()
        procs[0].kill()
        procs[0].wait()
    assert _watchdog.connect(uuid.uuid4().hex) is None  # nobody listens: no error


DRIVER = """
import os, signal, socket, sys, time
sys.path.insert(0, {root!r})
from mpiray import _watchdog
session, mode = sys.argv[1], sys.argv[2]
listener = _watchdog.listen(session)
rank = __import__("subprocess").Popen([sys.executable, "-c", {rank!r}], stdout=-1, stderr=-3)
assert rank.stdout.readline() == b"connected\\n"
host = socket.gethostname()
nodes = [{{"rank": 1, "pid": rank.pid, "host": host}}]
if mode == "two-hosts":
    nodes.append({{"rank": 2, "pid": 1, "host": "elsewhere"}})
dog = _watchdog.start_watchdog(listener, nodes, host)
print("watchdog", dog is not None, rank.pid, flush=True)
time.sleep(0.5)  # the job runs a while
if mode == "bye":
    _watchdog.quiet_watchdog(dog)
if mode == "driver-first":  # the rank outlives the driver: the launcher kills it after
    os.kill(os.getpid(), signal.SIGKILL)
rank.kill()
time.sleep(0.3)  # a launcher reaps its ranks; here the zombie stays a moment (its exit status shows)
rank.wait()
if mode == "outlive":
    time.sleep(_watchdog.GRACE + 1)
    print("alive", dog.poll(), flush=True)
    sys.exit(0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_driver(mode):
    root = os.path.dirname(os.path.dirname(_watchdog.__file__))
    session = uuid.uuid4().hex
    rank = RANK.format(root=root, session=session)
    out = subprocess.run([sys.executable, "-c", DRIVER.format(root=root, rank=rank), session, mode],
                         capture_output=True, text=True, timeout=30)  # waits for the watchdog's EOF too
    return out


def test_watchdog_names_the_rank_when_the_driver_is_killed_after_it():
    out = run_driver("kill")
    assert out.returncode == -signal.SIGKILL, out
    pid = out.stdout.split()[2]
    assert out.stdout.startswith("watchdog True"), out
    assert "mpiray: rank 1 (host" in out.stderr and f"pid {pid}) died: killed by signal 9" in out.stderr, out
    assert "The job ends" in out.stderr and out.stderr.count("\n") == 1, out


def test_watchdog_is_quiet_after_bye():
    out = run_driver("bye")
    assert out.returncode == -signal.SIGKILL and out.stderr == "", out


def test_watchdog_names_a_dead_rank_at_once_even_if_the_driver_outlives_it():
    # the launcher usually kills the driver within milliseconds of the rank and may stop
    # forwarding output with it: the watchdog must not wait for the driver's end to speak
    out = run_driver("outlive")
    pid = out.stdout.split()[2]
    assert out.returncode == 0, out
    assert f"pid {pid}) died: killed by signal 9" in out.stderr and out.stderr.count("\n") == 1, out
    assert out.stdout.split("\n")[1] == "alive 0", out  # it left by itself after GRACE


def test_watchdog_blames_no_rank_when_the_driver_died_first():
    out = run_driver("driver-first")
    pid = int(out.stdout.split()[2])
    try:
        os.kill(pid, signal.SIGKILL)  # what the launcher does next
    except ProcessLookupError:
        pass
    assert out.returncode == -signal.SIGKILL and out.stderr == "", out


def test_watchdog_runs_only_for_one_host_jobs():
    out = run_driver("two-hosts")
    assert out.stdout.startswith("watchdog False"), out
    assert out.stderr == "", out
