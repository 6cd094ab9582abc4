"""Workers forked from a template process that shares the raylet's MPI memory.

MPI can read and write fast only memory it allocated itself (``Win.Allocate``);
MPICH maps that memory from a file it unlinks at once, so no other process can
open it.  A process forked after the window exists shares it, though.  So
when a raylet has an arena window (``_store/regions.py``) it forks, right
after opening it and while it is still single-threaded, a small *zygote*
process that does nothing but fork workers on request::

    raylet ── spawn(env, worker socket) ──> zygote ── fork ──> intermediate ── fork ──> worker
           <──────────── worker pid ─────────────────────────── (exits at once)

The intermediate exits at once, so the worker is re-parented to the raylet
(a child subreaper): the raylet waits for it and reads its exit status as for
any child (``ForkedProc``).  The worker gets its environment (its GPUs among
it) before anything imports CUDA, holds no descriptor of the raylet's but the
standard streams (the zygote points the others at /dev/null), never touches
MPI (``import mpi4py`` fails in it), and leaves with ``os._exit`` (the MPI
state it inherited must not be finalized twice).

The fork of the zygote is the one fork of a process that may run threads the
MPI made (UCX's event thread, for one: it waits in ``epoll`` and holds no
lock then).  The zygote proves it is sound before the raylet relies on it: it
maps and unmaps memory (the calls an MPI's memory hooks intercept) and says
ready within ``READY_TIMEOUT``.  When the raylet runs Python threads or has
loaded the CUDA driver (workers must start CUDA themselves, each with its own
``CUDA_VISIBLE_DEVICES``), or the fork or that check fails, there is no
zygote: workers start as fresh interpreters and pulls take the staging window,
as without an arena.  A
zygote that dies (or stops answering) later is replaced by a new one, checked
the same way on a page of the arena kept for that (``Pool._fork_worker``); if
that fails too, the raylet ends with an error that says how to turn it off.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

_PID = struct.Struct("!i")
READY_TIMEOUT = 10.0  # seconds for a new zygote to say it works
SPAWN_TIMEOUT = 60.0  # seconds for a worker's pid to come back
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _prctl(option: int, arg: int) -> bool:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(option, arg, 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return False


class ForkedProc:
    """What ``subprocess.Popen`` offers the pool, for a worker the zygote forked (a child
    of the raylet by re-parenting)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # someone else reaped it: its status is gone
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        pause = 0.0005
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout)
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Zygote:
    """The raylet's handle on its zygote."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock = sock
        self.pid = pid

    @classmethod
    def start(cls, shared: Any = None) -> "Zygote | None":
        """Fork the zygote now; None when this process runs Python threads, cannot fork,
        or the zygote does not come up.  With ``shared`` (writable memory, e.g. an MPI
        window), also None unless a write into it after the fork is seen by the zygote:
        an MPI may hand out private memory, or keep its pages from children
        (``MADV_DONTFORK``), and then forked workers cannot read what lands there."""
        if threading.active_count() > 1 or _cuda_loaded():
            return None
        probe = memoryview(shared).cast("B")[:8] if shared is not None and len(shared) >= 8 else None
        if not _prctl(_PR_SET_CHILD_SUBREAPER, 1):
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        ours, theirs = socket.socketpair()
        raylet = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return None
        if pid == 0:  # the zygote: never returns
            ours.close()
            _serve(theirs, raylet, probe)
        theirs.close()
        ours.settimeout(READY_TIMEOUT)
        try:
            ok = ours.recv(1) == b"R"
            if ok and probe is not None:
                token = os.urandom(8)
                probe[:] = token
                ours.sendall(token)
                ok = ours.recv(1) == b"Y"
        except OSError:
            ok = False
        if not ok:
            ours.close()
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)
            return None
        ours.settimeout(SPAWN_TIMEOUT)
        return cls(ours, pid)

    def spawn(self, env: dict[str, str], fd: int) -> ForkedProc:
        """A new worker process with environment ``env`` that talks over descriptor ``fd``."""
        data = pickle.dumps(env)
        socket.send_fds(self.sock, [struct.pack("!I", len(data)) + data], [fd])
        got = b""
        while len(got) < _PID.size:
            try:
                more = self.sock.recv(_PID.size - len(got))
            except socket.timeout:
                more = b""
            if not more:
                raise OSError(f"the raylet's zygote process (pid {self.pid}) did not fork a "
                              f"worker (set MPIRAY_NODE_ARENA_BYTES=0 to start workers without one)")
            got += more
        pid = _PID.unpack(got)[0]
        if pid < 0:
            raise OSError(-pid, "the zygote could not fork a worker")
        return ForkedProc(pid)

    def close(self, kill: bool = False) -> None:
        """The zygote exits when its socket closes (or at once, with ``kill``); wait for it."""
        try:
            self.sock.close()
            if kill:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        finally:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped already (Pool.reap)
                pass


def _cuda_loaded() -> bool:
    """Whether this process loaded the CUDA driver (the script touched a GPU before
    ``init``): forked workers would inherit its context and ignore their own
    ``CUDA_VISIBLE_DEVICES``."""
    try:
        with open("/proc/self/maps") as f:
            return any("libcuda.so" in line for line in f)
    except OSError:  # pragma: no cover - no /proc
        return False


# the garbage collector's settings of workers: the interpreter's, taken at import, before
# a raylet changes its own (raylet.py: FULL_GC_EVERY) and then forks a new zygote
GC_THRESHOLD = gc.get_threshold()


# -- inside the zygote -----------------------------------------------------------
def _serve(sock: socket.socket, raylet: int, shared: Any) -> None:
    try:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != raylet:
            os._exit(0)
        gc.set_threshold(*GC_THRESHOLD)  # not the raylet's (it makes no full collection while busy)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the raylet's to handle
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _drop_inherited_fds(sock.fileno())
        probe = mmap.mmap(-1, 4 << 20)  # through the MPI's memory hooks, if it has any
        probe[::mmap.PAGESIZE] = b"\1" * ((4 << 20) // mmap.PAGESIZE)
        probe.close()
        sock.sendall(b"R")
        if shared is not None:  # the raylet writes a token after the fork: is it seen here?
            token = b""
            while len(token) < 8:
                more = sock.recv(8 - len(token))
                if not more:
                    os._exit(0)
                token += more
            sock.sendall(b"Y" if bytes(shared) == token else b"N")
        while True:
            head, fds, _flags, _addr = socket.recv_fds(sock, 4, 1)
            if not head:
                os._exit(0)  # the raylet closed its end
            n = struct.unpack("!I", head)[0]
            data = b""
            while len(data) < n:
                more = sock.recv(n - len(data))
                if not more:
                    os._exit(0)
                data += more
            env = pickle.loads(data)
            fd = fds[0]
            try:
                mid = os.fork()
            except OSError as exc:
                sock.sendall(_PID.pack(-(exc.errno or 1)))
                os.close(fd)
                continue
            if mid == 0:
                try:
                    pid = os.fork()
                except OSError as exc:
                    sock.sendall(_PID.pack(-(exc.errno or 1)))
                    os._exit(1)
                if pid:
                    sock.sendall(_PID.pack(pid))  # re-parented to the raylet as this exits
                    os._exit(0)
                sock.close()
                _worker(env, fd, raylet)
            os.close(fd)
            os.waitpid(mid, 0)
    except BaseException:  # noqa: BLE001 - a zygote that fails must not return into the raylet
        os._exit(1)


def _drop_inherited_fds(keep: int) -> None:
    """Let go of the raylet's descriptors (MPI's, the watchdog's socket ...): each is
    replaced by /dev/null rather than closed, so that Python objects inherited with
    them (a log file opened before ``init``) never write into a descriptor number
    reused for something else, such as a worker's socket."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # pragma: no cover - no /proc
        fds = []
    for fd in fds:
        if fd > 2 and fd not in (keep, null):
            try:
                os.dup2(null, fd)
            except OSError:
                pass


def _worker(env: dict[str, str], fd: int, raylet: int) -> None:
    """The forked worker: wait to be the raylet's child, take its environment, run."""
    code = 0
    try:
        end = time.monotonic() + 5.0
        while os.getppid() != raylet:  # the intermediate is exiting
            if time.monotonic() > end:
                os._exit(1)
            time.sleep(0.0001)
        os.environ.clear()
        os.environ.update(env)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for stream in (sys.stdout, sys.stderr):  # as PYTHONUNBUFFERED would have made them
            try:
                stream.reconfigure(line_buffering=True)
            except (AttributeError, ValueError):
                pass
        for name in [n for n in sys.modules if n == "mpi4py" or n.startswith("mpi4py.")]:
            sys.modules[name] = None  # the raylet's MPI is not the task's to use: ImportError
        np = sys.modules.get("numpy")
        if np is not None:  # forked processes share the template's seed: draw a new one
            np.random.seed()
        sys.argv = [sys.argv[0] if sys.argv else "mpiray-worker"]
        from .worker_main import main

        main(fd)  # sets PR_SET_PDEATHSIG: the raylet is its parent by now
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)

