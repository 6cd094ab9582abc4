"""Rank 0's liveness check, driven without MPI: a dead or silent raylet ends the job."""

import os
import subprocess
import sys
import time

from mpiray._control.gcs import GCS
from mpiray._control.service import Service
from mpiray._liveness import process_alive
from mpiray._objref import RefTracker


class FakeTransport:
    slot_size, nslots, stage, rank = 1, 1, None, 0

    def __init__(self):
        self.aborted = None
        self.sent = []

    def poll(self):
        return []

    def send(self, dest, msg):
        self.sent.append((dest, msg))

    def flush(self):
        pass

    def abort(self, code):
        self.aborted = code


def service():
    return Service(GCS(), FakeTransport(), store=None, tracker=RefTracker())


def test_dead_same_host_raylet_aborts_with_rank_and_host(capfd):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    s = service()
    s.peers = {2: ("nodeA", p.pid)}
    s.same_host = {2}
    s._check_ranks(now=100.0)
    assert s.transport.aborted == 1
    err = capfd.readouterr().err
    assert "rank 2 (host nodeA" in err and "died" in err


def test_silent_raylet_is_declared_dead_after_the_limit(capfd):
    s = service()
    s.peers = {1: ("nodeB", os.getpid())}
    s.silence_limit = 20.0
    s.last_seen = {1: 100.0}
    s._check_ranks(now=110.0)
    assert s.transport.aborted is None
    s._check_ranks(now=121.0)
    assert s.transport.aborted == 1
    assert "sent nothing for 21 s" in capfd.readouterr().err


def test_ranks_that_said_bye_are_not_checked():
    s = service()
    s.peers = {1: ("nodeB", 999_999_999)}
    s.same_host = {1}
    s.byes = {1}
    s._check_ranks(now=1e6)
    assert s.transport.aborted is None


def test_zombie_raylet_counts_as_dead(capfd):
    # a killed rank stays a zombie until its parent reaps it; kill(pid, 0) still succeeds
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while process_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not process_alive(p.pid)
    os.kill(p.pid, 0)  # not reaped yet: still there for kill()
    s = service()
    s.peers = {2: ("nodeA", p.pid)}
    s.same_host = {2}
    s._check_ranks(now=100.0)
    assert s.transport.aborted == 1
    assert "its process is gone" in capfd.readouterr().err
    p.wait()


def test_live_raylets_get_heartbeats_once_a_second():
    s = service()
    s.peers = {1: ("nodeA", os.getpid()), 2: ("nodeB", os.getpid())}
    s.same_host = {1}
    s._check_ranks(now=100.0)
    s._check_ranks(now=100.5)
    s._check_ranks(now=101.2)
    assert s.transport.aborted is None
    assert [d for d, msg in s.transport.sent if msg[0] == "hb"] == [1, 2, 1, 2]
