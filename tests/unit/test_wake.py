"""Waking a sleeping rank of the same host through its named pipe (no MPI)."""

import os
import select
import stat

from mpiray._comm import wake


def _readable(fd, timeout=0.0):
    return bool(select.select([fd], [], [], timeout)[0])


def test_a_poke_wakes_the_pipe_and_drain_empties_it(tmp_path):
    pipe = wake.WakePipe(wake.wake_path(str(tmp_path), 1))
    try:
        assert stat.S_ISFIFO(os.stat(pipe.path).st_mode)
        assert not _readable(pipe.fd)
        pokers = wake.Pokers({1: pipe.path})
        pokers.poke(1, now=10.0)
        assert _readable(pipe.fd, 1.0)
        assert pipe.drain() is True
        assert not _readable(pipe.fd) and pipe.drain() is False
        assert not _readable(pipe.fd)  # a poker's writer closed: no end-of-file, the reader holds one
    finally:
        pipe.close()


def test_pokes_are_spaced_and_only_for_known_ranks(tmp_path):
    pipe = wake.WakePipe(wake.wake_path(str(tmp_path), 2))
    try:
        pokers = wake.Pokers({2: pipe.path})
        pokers.poke(2, now=5.0)
        pokers.poke(2, now=5.0 + wake.POKE_GAP / 2)  # too soon: no second byte
        assert os.read(pipe.fd, 16) == b"\0"
        pokers.poke(2, now=5.0 + 2 * wake.POKE_GAP)
        assert os.read(pipe.fd, 16) == b"\0"
        pokers.poke(3, now=9.0)  # another host's rank: nothing to poke
        assert 3 not in pokers.last and not _readable(pipe.fd)
    finally:
        pipe.close()


def test_poking_a_rank_not_listening_is_silent(tmp_path):
    path = wake.wake_path(str(tmp_path), 4)
    pokers = wake.Pokers({4: path})
    pokers.poke(4, now=1.0)  # no pipe yet: silent
    pipe = wake.WakePipe(path)
    pokers.poke(4, now=2.0)  # it listens now
    assert _readable(pipe.fd, 1.0)
    pipe.close()
    assert not os.path.exists(path)
    pipe.close()  # twice: nothing
    pokers.poke(4, now=3.0)  # gone again: still silent


def test_a_full_pipe_is_a_pending_wake_up(tmp_path):
    pipe = wake.WakePipe(wake.wake_path(str(tmp_path), 5))
    try:
        for _ in range(100_000):  # fill it (64 KiB): pokes must not block or raise
            pipe.poke_self()
        pokers = wake.Pokers({5: pipe.path})
        pokers.poke(5, now=1.0)
        assert pipe.drain() is True and not _readable(pipe.fd)
    finally:
        pipe.close()


def test_a_folder_that_cannot_hold_a_pipe_means_no_wake_ups(tmp_path):
    from mpiray._comm.mpi import Transport

    class Comm:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

    t = Transport(Comm())
    assert t.enable_wake(str(tmp_path / "missing"), ["h", "h"]) is None  # no such folder
    assert t.pokers.paths == {1: wake.wake_path(str(tmp_path / "missing"), 1)}
    t.pokers.poke(1)  # nobody listens: silent


def test_a_poke_after_the_reader_ended_is_no_sigpipe(tmp_path):
    import signal

    path = wake.wake_path(str(tmp_path), 6)
    pipe = wake.WakePipe(path)
    pokers = wake.Pokers({6: path})
    pokers.poke(6, now=1.0)
    pipe.close()  # the rank ended
    old = signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # as some scripts do: SIGPIPE would kill
    try:
        pokers.poke(6, now=2.0)  # the pipe is gone: nothing happens
        os.mkfifo(path)  # a pipe nobody reads (a rank that died without cleaning up)
        pokers.poke(6, now=3.0)
    finally:
        signal.signal(signal.SIGPIPE, old)
        os.unlink(path)


def test_the_service_sleeps_on_a_pipe_with_a_high_descriptor(tmp_path):
    import threading
    import time as _time

    import resource

    import pytest

    from mpiray._control.service import Service

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
        except (ValueError, OSError):
            pass
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 1200:
        pytest.skip("this process may not open 1,200 files (ulimit -n)")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the user's script's files
    pipe = wake.WakePipe(wake.wake_path(str(tmp_path), 0))
    try:
        assert pipe.fd >= 1024  # select() would refuse it
        svc = Service.__new__(Service)
        svc.wake_pipe, svc._poll, svc.sleeping, svc.leases, svc.poked_at = pipe, None, False, None, 0.0
        svc.wake_event = threading.Event()
        t0 = _time.monotonic()
        threading.Timer(0.05, wake.Pokers({0: pipe.path}).poke, (0,)).start()
        svc._sleep(5.0)
        assert _time.monotonic() - t0 < 2.0  # the poke ended the wait
        svc.wake_event.set()
        svc._sleep(5.0)  # woken already: returns at once
        assert _time.monotonic() - t0 < 2.0
    finally:
        pipe.close()
        for fd in held:
            os.close(fd)


def test_rank_0_sleeping_deeply_wakes_for_a_leased_worker_and_for_a_poke(tmp_path):
    # rank 0's service thread sleeps up to DEEP_POKED on its pipe; a leased worker answers on
    # its own socket, which must end that sleep too (else its result waits up to 0.5 s)
    import threading
    import time

    from mpiray._control.service import Service

    svc = Service.__new__(Service)
    svc.wake_pipe = wake.WakePipe(wake.wake_path(str(tmp_path), 0))
    svc.wake_event, svc.sleeping, svc._poll, svc.poked_at = threading.Event(), False, None, 0.0
    r, w = os.pipe()

    class Leases:
        def fds(self):
            return [r]

    svc.leases = Leases()
    try:
        threading.Timer(0.05, os.write, (w, b"x")).start()
        t0 = time.monotonic()
        svc._sleep(5.0)
        assert time.monotonic() - t0 < 2.5 and svc.poked_at == 0.0  # woken, but not poked
        os.read(r, 1)
        svc.leases = None
        threading.Timer(0.05, wake.Pokers({0: svc.wake_pipe.path}).poke, (0,)).start()
        t0 = time.monotonic()
        svc._sleep(5.0)
        assert time.monotonic() - t0 < 2.5 and svc.poked_at >= t0  # a poke: rechecked soon after
    finally:
        svc.wake_pipe.close()
        os.close(r)
        os.close(w)
