"""The raylet's worker processes: start, hand out, replace, stop.

Workers are plain child processes (``python -m mpiray._node.worker_main``, or
forked by the raylet's zygote when it has an arena window: ``zygote.py``)
that never touch MPI; each talks to its raylet over one socketpair.  A worker
is started for a GPU set (``CUDA_VISIBLE_DEVICES`` is fixed once CUDA starts),
so tasks are matched to an idle worker with the same set or a new one is made.
Workers die with the raylet (PR_SET_PDEATHSIG and EOF on the socket).
"""

from __future__ import annotations

import json
import os
import select
import selectors
import socket
import subprocess
import sys
import time
from collections import deque
from typing import Any

from .._protocol.channel import Channel, frame
from .._watchdog import exit_words


# launcher variables a child must not see: a task that imports mpi4py must not
# join (and break) the raylet's MPI job
_STRIP_PREFIXES = ("PMI_", "PMIX_", "OMPI_", "HYDRA_", "MPIR_", "I_MPI_")


def worker_env(base: dict[str, str], gpu_ids: tuple, context: dict | None) -> dict[str, str]:
    """A worker's environment; without ``context`` it waits for it as its first message."""
    env = {k: v for k, v in base.items() if not k.startswith(_STRIP_PREFIXES)}
    env.pop("MPI_LOCALNRANKS", None)
    env.pop("MPI_LOCALRANKID", None)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    if context is not None:
        env["MPIRAY_WORKER_CONTEXT"] = json.dumps(context)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _spawn(fd: int, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mpiray._node.worker_main", str(fd)],
                            pass_fds=(fd,), env=env, close_fds=True)


def prestart() -> tuple[socket.socket, subprocess.Popen]:
    """A CPU worker started before this raylet knows its job (it gets its context as its
    first message): its interpreter comes up while MPI does, ~0.1 s sooner to the first task."""
    parent, child = socket.socketpair()
    try:
        return parent, _spawn(child.fileno(), worker_env(dict(os.environ), (), None))
    finally:
        child.close()


class Worker:
    __slots__ = ("conn", "fd", "proc", "gpus", "task", "ahead", "blocked", "funcs", "started", "ready",
                 "get_req", "outbox", "cancel_next", "leased", "inbox", "actor", "refs")

    def __init__(self, conn: Channel, proc: Any, gpus: tuple):
        self.conn = conn
        self.fd = conn.fileno()
        self.inbox = conn.inbox  # its messages, read a burst at a time
        self.proc = proc
        self.gpus = gpus
        self.task: Any = None  # the running LocalTask, or None when idle
        self.ahead: deque = deque()  # LocalTasks sent ahead, waiting in the socket (prefetch)
        self.outbox: list[bytes] = []  # framed messages not yet written (see write_outbox)
        self.cancel_next: Any = None  # a cancelled LocalTask that may or may not still run
        self.blocked = False
        self.funcs: set[str] = set()
        self.started = time.monotonic()
        self.ready = False
        self.get_req: Any = None  # the GetRequest this worker is blocked on
        self.leased: str | None = None  # lent to rank 0 under this lease id (_control/lease.py)
        self.actor: str | None = None  # the actor this worker is, for good (_node/actors.py)
        self.refs: dict | None = None  # an actor's worker: refs it holds (id -> count)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def queue_message(self, msg: tuple) -> None:
        """Frame ``msg`` as ``Channel.send`` would; ``write_outbox`` sends the lot."""
        self.outbox.extend(frame(msg))

    def write_outbox(self) -> None:
        """Write every queued message with one system call (one wake-up of the worker).

        A worker that died meanwhile is noticed when its socket reads EOF (its
        tasks are requeued or reported there), so a broken pipe is not an error.
        """
        view = memoryview(b"".join(self.outbox))
        self.outbox.clear()
        try:
            while view.nbytes:
                view = view[os.write(self.fd, view):]
        except OSError:
            pass


class Pool:
    def __init__(self, context: dict, max_idle: int):
        self.context = context
        self.max_idle = max_idle
        self.workers: dict[int, Worker] = {}  # fileno -> Worker
        self.selector = selectors.DefaultSelector()  # every worker socket, registered once
        self.wake: Any = None  # _comm/wake.WakePipe: another rank of this host sent us something
        self.poked = False  # ... and it woke the last wait
        self.idle: dict[tuple, list[Worker]] = {}
        self._reap: list[Any] = []  # stopped workers (Popen or zygote.ForkedProc) not yet waited for
        self.zygote: Any = None  # zygote.Zygote: forks workers that share the raylet's arena
        self.zygote_probe: Any = None  # the arena bytes a new zygote proves it shares
        self.early: Any = None  # (socket, Popen) of a worker started ahead (``prestart``)

    def start(self, gpus: tuple = ()) -> Worker:
        adopted = self._adopt_early() if not gpus and self.zygote is None else None
        if adopted is not None:
            conn, proc = adopted
        else:
            if self.zygote is not None:
                self._drop_early()  # workers must be the zygote's: that one is not wanted
            parent, child = socket.socketpair()
            env = worker_env(dict(os.environ), gpus, self.context)
            try:
                if self.zygote is not None:  # forked: shares the raylet's arena (zygote.py)
                    proc = self._fork_worker(env, child.fileno())
                else:
                    proc = _spawn(child.fileno(), env)
            finally:
                child.close()
            conn = Channel(parent.detach())
        w = Worker(conn, proc, gpus)
        self.workers[conn.fileno()] = w
        self.selector.register(conn.fileno(), selectors.EVENT_READ, w)
        self.idle.setdefault(gpus, []).append(w)
        return w

    def _adopt_early(self) -> Any:
        """The worker started ahead (``prestart``), now told its context; None if there is
        none, or it died meanwhile (then it is reaped like any)."""
        early, self.early = self.early, None
        if early is None:
            return None
        parent, proc = early
        channel = Channel(parent.detach())
        try:
            channel.send(("context", self.context))
        except OSError:
            channel.close()
            self._reap.append(proc)
            return None
        return channel, proc

    def _drop_early(self) -> None:
        if self.early is not None:  # its socket's end stops it
            self._reap.append(self.early[1])
            self.early[0].close()
            self.early = None

    def _fork_worker(self, env: dict, fd: int) -> Any:
        """A worker from the zygote; a zygote that died (or hangs) is replaced once.  Workers
        must share the arena (tasks are handed copies in it), so without a zygote the
        raylet cannot go on: the error says so."""
        try:
            return self.zygote.spawn(env, fd)
        except OSError as exc:
            from .zygote import Zygote

            self.zygote.close(kill=True)
            self.zygote = Zygote.start(self.zygote_probe)
            if self.zygote is None:
                raise OSError(f"{exc}, and a new zygote could not be started") from None
            return self.zygote.spawn(env, fd)

    def ready(self, timeout: float) -> list[Worker]:
        """Workers with a message waiting, waiting at most ``timeout`` seconds.

        epoll rounds timeouts up to whole milliseconds; below that, select(2) keeps
        microseconds, so a short wait still wakes the moment a worker writes.
        """
        if 0 < timeout < 1e-3 and len(self.workers) < 512:
            fds, _, _ = select.select([*self.workers, *self._wake_fds], [], [], timeout)
            ready = [self.workers[fd] for fd in fds if fd in self.workers]
            if len(ready) < len(fds):
                self.poked = self.wake.drain()
            return ready
        ready = [key.data for key, _ in self.selector.select(timeout)]
        if None in ready:
            self.poked = self.wake.drain()
            ready = [w for w in ready if w is not None]
        return ready

    @property
    def _wake_fds(self) -> tuple:
        return (self.wake.fd,) if self.wake is not None else ()

    def watch_wake(self, pipe: Any) -> None:
        """Wait on ``pipe`` too (None: no more): a poke ends the wait like a worker's
        message."""
        if self.wake is not None:
            try:
                self.selector.unregister(self.wake.fd)
            except (KeyError, ValueError):
                pass  # closed already: the selector forgot it
        self.wake = pipe
        if pipe is not None:
            self.selector.register(pipe.fd, selectors.EVENT_READ, None)

    def take(self, gpus: tuple) -> Worker:
        """An idle worker for this GPU set, starting one if needed."""
        lst = self.idle.get(gpus)
        if lst:
            for i, w in enumerate(lst):
                if w.ready:
                    return lst.pop(i)
            return lst.pop(0)
        if gpus:  # make room: retire one idle worker bound to other GPUs
            for key, other in self.idle.items():
                if key and key != gpus and other:
                    self.stop_worker(other.pop())
                    break
        w = self.start(gpus)
        self.idle[gpus].remove(w)
        return w

    def give_back(self, w: Worker) -> None:
        w.task = w.cancel_next = None
        w.ahead.clear()
        w.blocked = False
        lst = self.idle.setdefault(w.gpus, [])
        if len(lst) >= self.max_idle:
            self.stop_worker(w)
        else:
            lst.append(w)

    def alive(self, w: Worker) -> bool:
        return self.workers.get(w.fd) is w

    def remove(self, w: Worker) -> None:
        if self.workers.get(w.fd) is w:
            del self.workers[w.fd]
            self.selector.unregister(w.fd)
        lst = self.idle.get(w.gpus)
        if lst and w in lst:
            lst.remove(w)
        try:
            w.conn.close()
        except OSError:
            pass

    def stop_worker(self, w: Worker) -> None:
        try:
            w.conn.send(("exit",))
        except OSError:
            pass
        self.remove(w)
        self._reap.append(w.proc)

    def reap(self) -> None:
        self._reap = [p for p in self._reap if p.poll() is None]
        if self.zygote is not None:  # a subreaper adopts orphans of tasks: wait for them too
            known = {w.proc.pid: w.proc for w in self.workers.values()}
            known.update((p.pid, p) for p in self._reap)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if not pid:
                    break
                if pid in known and known[pid].returncode is None:
                    known[pid].returncode = os.waitstatus_to_exitcode(status)

    def exit_description(self, w: Worker) -> str:
        try:
            code = w.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            code = w.proc.wait()
        return exit_words(code, " (os._exit or sys.exit in the task?)")

    def shutdown(self, timeout: float = 3.0) -> None:
        self._drop_early()
        procs = [w.proc for w in self.workers.values()] + self._reap
        for w in list(self.workers.values()):
            if w.task is not None:  # busy (an actor's or a task's): it would not read "exit",
                w.proc.kill()  # and its work is for nobody now
            else:
                try:
                    w.conn.send(("exit",))
                except OSError:
                    pass
            self.remove(w)
        end = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(timeout=max(0.01, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._reap = []
        if self.zygote is not None:
            self.zygote.close()
            self.zygote = None
