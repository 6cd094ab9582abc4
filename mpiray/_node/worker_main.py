"""A worker process: runs tasks its raylet sends, one at a time.  Never imports MPI.

The worker is also a runtime for the public API, so a task can submit tasks,
``put`` and ``get``: those requests go to the raylet over the worker's socket
(``WorkerRuntime``).  ``print`` inside a task reaches the job's output with a
prefix naming the task, rank, host and pid, like Ray's log streaming.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import sys
import time
import types
from typing import Any

from .. import _api
from .._objref import ObjectRef, RefTracker
from .._options import TaskOptions, from_units
from .._protocol import messages as m
from .._protocol.channel import Channel
from .._serialization import Blob, loads
from .._store.shm import Store, register_spill_root
from .._protocol.messages import Failure
from ..exceptions import GetTimeoutError
from .._watchdog import unix_socket
from .._values import IdGen, decode, encode, make_spec, resolve_arguments, task_failure, where


_SIGINT = {signal.SIGINT}


class _Abandon(Exception):
    """The task cannot start here (its failure is already set)."""


class PrefixedStream:
    """Line-buffered text stream that prefixes each line with the running task."""

    def __init__(self, raw: Any, ctx: dict):
        self.raw = raw
        self.ctx = ctx
        self.name: str | None = None
        self._prefix: str | None = ""  # None: not built yet for this task (most tasks print nothing)
        self.partial = ""

    @property
    def prefix(self) -> str:
        if self._prefix is None:
            c = self.ctx
            self._prefix = f"({self.name} pid={os.getpid()}, rank={c['rank']}, host={c['host']}) "
        return self._prefix

    def set_task(self, name: str | None) -> None:
        if self.partial:
            self.flush()
        self.name = name
        self._prefix = None if name else ""

    def write(self, text: str) -> int:
        data = self.partial + text
        lines = data.split("\n")
        self.partial = lines.pop()
        if lines:
            prefix = self.prefix
            self.raw.write("".join(f"{prefix}{line}\n" for line in lines))
            self.raw.flush()
        return len(text)

    def flush(self) -> None:
        if self.partial:
            self.raw.write(f"{self.prefix}{self.partial}\n")
            self.partial = ""
        self.raw.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


class WorkerRuntime:
    is_driver = False

    def __init__(self, conn: Channel, ctx: dict):
        self.conn = conn
        self.ctx = ctx
        self.rank = ctx["rank"]
        self.tracker = RefTracker()
        self.ids = IdGen(f"{ctx['session'][:6]}w{self.rank}x{os.getpid():x}")
        self.store = Store(ctx["session"], self.rank, os.path.dirname(ctx["store_root"]),
                           ctx["spill_root"])
        register_spill_root(self.store)
        self.inline_limit = ctx["inline_limit"]
        self.capacity = ctx["store_capacity"]
        self.exported: set[str] = set()
        self.task: m.TaskSpec | None = None
        self.gpu_ids: tuple = ()
        self.funcs: dict[str, Any] = {}
        self.running = False  # inside the user's function (SIGINT interrupts only then)
        self.requests = 0  # ids of this worker's get/wait requests
        # leased to rank 0 (_control/lease.py): its connection, the task it sent, and whether
        # that task told the raylet about itself (it did if it sent the raylet anything)
        self.lease_conn: Channel | None = None
        self.lease_poll: Any = None  # select.poll over both connections while leased
        self.lease_task: m.TaskSpec | None = None
        self.announced = False
        self.made: dict[str, tuple] = {}  # ObjInfo of what the last task returned (m.CHAINED)
        self.actor: Any = None  # the instance, once this worker is an actor (_node/actors.py)
        self.actor_id: str | None = None
        self.loop: Any = None  # the event loop of an actor's async methods
        self.exit_after = False  # the actor exited (sys.exit / exit_actor): end after the reply

    # -- messages ----------------------------------------------------------
    def send(self, msg: tuple) -> None:
        if self.lease_task is not None and not self.announced:
            self.announced = True
            self.conn.send((m.W_LEASE_TASK, self.lease_task))
        changes = self.tracker.drain()
        if changes:
            self.conn.send((m.W_REFS, changes))
        self.conn.send(msg)

    def _finish(self, msg: tuple) -> None:
        """Send a task's W_DONE: straight to rank 0 for a leased task that sent the raylet
        nothing (its results' stored files noted there first), else through the raylet."""
        if self.lease_task is None or self.announced or self.tracker.changes:
            self.send(msg)  # (announces a leased task first if it has not yet)
            self.lease_task, self.announced = None, False
            return
        self.lease_task = None
        stored = [(oid, info) for oid, info, _c in msg[2] if info[0] == "shm"]
        if stored:
            self.conn.send((m.W_MADE, stored))
        try:
            self.lease_conn.send(msg)
        except OSError:  # rank 0 is going away; the raylet takes the worker back
            self.drop_lease()

    def open_lease(self, lease_id: str, address: str) -> None:
        s = unix_socket(address)
        if s is None:
            return self.drop_lease()
        try:
            self.lease_conn = Channel(s.detach())
            self.lease_conn.send(lease_id)
            self.lease_poll = select.poll()
            for c in (self.conn, self.lease_conn):
                self.lease_poll.register(c.fileno(), select.POLLIN)
        except OSError:
            self.drop_lease()

    def drop_lease(self) -> None:
        """The lease ended (rank 0 said so, or its socket closed): back to the raylet."""
        if self.lease_conn is not None:
            self.lease_conn.close()
        self.lease_conn = self.lease_poll = None
        try:
            self.conn.send((m.W_UNLEASED,))
        except OSError:
            pass  # the raylet is gone (shutdown): the main loop ends on its socket

    # -- the public API inside a task --------------------------------------
    def submit(self, func_id: str, func_bytes: bytes | None, name: str, args: tuple, kwargs: dict,
               options: TaskOptions, amend: Any = None) -> list[ObjectRef]:
        spec = make_spec(self.ids.task(), name, func_id, args, kwargs, options, self.inline_limit,
                         self._store_args)
        spec.parent = self.task.task_id if self.task is not None else None
        if amend is not None:  # an actor's creation or call (_actor.py)
            amend(spec)
        first = func_bytes is not None and func_id not in self.exported
        if first:
            self.exported.add(func_id)
        self.send((m.W_SUBMIT, spec, func_bytes if first else None))
        if spec.args_ref is not None:
            self.send((m.W_REFS, [(spec.args_ref, -1)]))
        refs = []
        for oid in spec.return_ids:
            ref = ObjectRef(oid, None)
            self.tracker.add(oid, announce=False)
            ref._tracker = self.tracker
            refs.append(ref)
        return refs

    def _store_args(self, blob: Blob) -> str:
        oid = self.ids.put()
        size = self.store.write(oid, blob)
        self.send((m.W_PUT, oid, ("shm", self.rank, size), blob.refs))
        return oid

    def put(self, value: Any) -> ObjectRef:
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself instead")
        oid = self.ids.put()
        info, contained = encode(oid, value, self.inline_limit, self.store, self.rank, self.capacity)
        self.send((m.W_PUT, oid, info, contained))
        ref = ObjectRef(oid, None)
        self.tracker.add(oid, announce=False)
        ref._tracker = self.tracker
        return ref

    def _fetch(self, ids: list[str], needed: int | None = None,
               timeout: float | None = None) -> dict[str, tuple]:
        """Local ObjInfo of ``needed`` (default: all) of ``ids``; fewer if ``timeout`` passes."""
        self.requests += 1
        rid = self.requests
        self.send((m.W_GET, rid, ids, len(set(ids)) if needed is None else needed))
        return dict(self._fetch_reply(rid, timeout))

    def _fetch_reply(self, rid: int, timeout: float | None = None) -> list:
        """The items of the W_OBJECTS that answers request ``rid`` (a W_GET: with
        ``timeout``, W_UNGET asks for a partial answer when it passes)."""
        end = None if timeout is None else time.monotonic() + timeout
        asked_now = False
        while True:
            if end is not None and not asked_now:
                left = end - time.monotonic()
                if left <= 0 or not self.conn.poll(left):
                    self.send((m.W_UNGET, rid))  # exactly one W_OBJECTS answers rid either way
                    asked_now = True
                    continue
            msg = self._recv_in_task()
            if msg[0] == m.W_OBJECTS:
                if msg[1] == rid:
                    return msg[2]
            elif msg[0] == m.W_EXIT:
                os._exit(0)
            elif msg[0] == m.W_RUN:  # sent ahead of time; we are blocked, so hand it back
                if msg[2] is not None:  # but keep its function: the raylet counts it as sent
                    try:
                        self._function(msg[1], msg[2])
                    except RuntimeError:
                        pass  # reported when a task of it runs here
                self.send((m.W_BOUNCE, msg[1].task_id))

    def _recv_in_task(self) -> tuple:
        """The raylet's next message, for a task waiting in get(): a cancel (SIGINT, raised
        in the task) may interrupt the wait, never the read, which would lose bytes of the
        stream or the messages read with them."""
        self.conn.poll(None)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
        try:
            return self.conn.recv()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        infos = self._fetch([r.id for r in refs], timeout=timeout)
        missing = [r.id for r in refs if r.id not in infos]
        if missing:
            raise GetTimeoutError(f"get() timed out after {timeout}s: {len(set(missing))} of "
                                  f"{len(set(r.id for r in refs))} object(s) not ready (e.g. {missing[0]})")
        return [decode(r.id, infos[r.id], self.tracker, self.store) for r in refs]

    def wait(self, refs: list[ObjectRef], num_returns: int, timeout: float | None):
        infos = self._fetch([r.id for r in refs], needed=num_returns, timeout=timeout)
        ready = [r for r in refs if r.id in infos][:num_returns]
        taken = set(id(r) for r in ready)
        return ready, [r for r in refs if id(r) not in taken]

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        raise NotImplementedError("mpiray.cancel() is available on the driver only")

    def kill_actor(self, actor_id: str, no_restart: bool) -> None:
        self.send((m.W_KILL, actor_id, no_restart))

    def get_actor(self, name: str) -> tuple:
        """Ask rank 0 (through the raylet) for the live actor named ``name``."""
        self.requests += 1
        rid = self.requests
        self.send((m.W_LOOKUP, rid, name))
        found = self._fetch_reply(rid)[0][1]
        if found is None:
            raise ValueError(f"no live actor is named {name!r}; name one with "
                             f"Cls.options(name={name!r}).remote(...)")
        return found

    def context(self) -> dict:
        spec = self.task
        return {"rank": self.rank, "host": self.ctx["host"], "node_id": self.ctx["node_id"],
                "task_id": spec.task_id if spec else None, "pid": os.getpid(), "job_id": self.ctx["session"],
                "assigned_resources": {k: from_units(v) for k, v in (spec.demand if spec else {}).items()},
                "gpu_ids": list(self.gpu_ids), "worker": True, "actor_id": self.actor_id}

    def nodes(self) -> list[dict]:
        raise NotImplementedError("mpiray.nodes() is available on the driver only")

    def cluster_resources(self) -> dict:
        raise NotImplementedError("mpiray.cluster_resources() is available on the driver only")

    def available_resources(self) -> dict:
        raise NotImplementedError("mpiray.available_resources() is available on the driver only")

    def shutdown(self) -> None:
        pass

    # -- running tasks -----------------------------------------------------
    def _function(self, spec: m.TaskSpec, func_bytes: bytes | None) -> Any:
        if func_bytes is not None:
            try:
                self.funcs[spec.func_id] = loads(func_bytes, [], None)
            except Exception as exc:
                raise RuntimeError(
                    f"could not load remote function {spec.name} on {where(self.rank)}: "
                    f"{type(exc).__name__}: {exc}. Make sure the module that defines it is "
                    "importable on every node (same environment, PYTHONPATH), or define the "
                    "function in the script itself.") from None
        return self.funcs[spec.func_id]

    def _exit_failure(self, spec: m.TaskSpec, exc: SystemExit) -> Failure:
        """An actor that exits ends (this call fails, later ones too; the worker exits after
        its reply); a plain task that calls sys.exit() fails with a RayTaskError."""
        import traceback

        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if spec.actor is not None:
            self.exit_after = True
            return Failure("exit", None, "ActorDiedError",
                           f"it exited in call {spec.name} (sys.exit({exc.code!r}) or exit_actor())",
                           tb, spec.name, where(self.rank))
        return Failure("error", None, "SystemExit", f"task {spec.name} called sys.exit({exc.code!r})",
                       tb, spec.name, where(self.rank))

    def _run_async(self, coro: Any) -> Any:
        """Run an actor's async method on the worker's loop; a cancel (KeyboardInterrupt out
        of the loop's wait) ends the coroutine too, so nothing of it runs later."""
        if self.loop is None:
            import asyncio

            self.loop = asyncio.new_event_loop()
        job = self.loop.create_task(coro)
        try:
            return self.loop.run_until_complete(job)
        except BaseException:
            job.cancel()
            try:
                self.loop.run_until_complete(job)
            except BaseException:  # noqa: BLE001 - its cancellation, or what it raised
                pass
            raise

    def on_sigint(self, signum: int, frame: Any) -> None:
        """Cancellation: interrupt the running task, never the worker's own loop, and only
        the task the raylet named (``m.interrupt_path``); rank 0 signals a leased worker,
        which runs one task at a time, without naming it."""
        task = self.task
        if not self.running or task is None:
            return
        if self.lease_task is None:
            try:
                os.unlink(m.interrupt_path(self.store.root, task.task_id))
            except FileNotFoundError:
                return  # meant for the task before this one, which has ended
        raise KeyboardInterrupt(f"task {task.name} was cancelled")

    def run(self, spec: m.TaskSpec, func_bytes: bytes | None, deps: dict, gpus: tuple,
            out: PrefixedStream, err: PrefixedStream) -> None:
        self.task, self.gpu_ids = spec, gpus
        out.set_task(spec.name)
        err.set_task(spec.name)
        results, failure = [], None
        made, self.made = self.made, {}
        self.running = True
        try:
            func = self._function(spec, func_bytes)
            method = spec.method
            if method is not None and method != m.ACTOR_INIT:  # a call of this worker's actor
                if self.actor_id != spec.actor:
                    raise RuntimeError(f"call {spec.name} reached a worker that is not its actor")
                func = getattr(self.actor, method)
            values, lost = {}, []
            # an actor may keep what it is given (handles, refs): count those refs here
            tracker = self.tracker if spec.actor is not None else None
            for oid, info in deps.items():
                if info[0] == "chained":  # returned by the task that ran just before (Raylet._chain)
                    info = made.get(oid)
                    if info is None:  # it failed: rank 0 settles the argument and sends us again
                        lost.append(oid)
                        continue
                try:
                    values[oid] = decode(oid, info, tracker, self.store)
                except FileNotFoundError:
                    lost.append(oid)
            if lost:
                failure = Failure("lostdep", None, "ObjectLostError", f"arguments {lost} are lost", "",
                                  spec.name, where(self.rank), lost=tuple(lost))
                raise _Abandon
            if spec.args_ref is not None:
                args, kwargs = values.pop(spec.args_ref)
            elif spec.args is not None:
                args, kwargs = loads(spec.args.data, spec.args.buffers, tracker)
            else:
                args, kwargs = (), {}
            args, kwargs = resolve_arguments(args, kwargs, values, spec.resolve_nested_refs)
            value = func(*args, **kwargs)
            if method is not None:
                if method == m.ACTOR_INIT:
                    self.actor, self.actor_id, value = value, spec.actor, None
                elif type(value) is types.CoroutineType:  # an async method: run it to its end
                    value = self._run_async(value)
            self.running = False
            n = len(spec.return_ids)
            if n == 0:  # an actor's restart: no object
                outputs = []
            elif n == 1:
                outputs = [value]
            else:
                outputs = list(value) if isinstance(value, (tuple, list)) else None
                if outputs is None or len(outputs) != n:
                    raise ValueError(f"task {spec.name} has num_returns={n} but returned "
                                     f"{type(value).__name__} {'of length ' + str(len(outputs)) if outputs else ''}".strip())
            for oid, v in zip(spec.return_ids, outputs):
                try:
                    info, contained = encode(oid, v, self.inline_limit, self.store, self.rank, self.capacity)
                except TypeError as exc:
                    raise TypeError(f"task {spec.name} returned a value that cannot be serialized: "
                                    f"{exc}") from None
                results.append((oid, info, contained))
            self.made = {oid: info for oid, info, _c in results}
        except _Abandon:
            pass
        except SystemExit as exc:  # sys.exit() or exit_actor(): never re-raised in the caller
            self.running = False
            for oid, _info, _c in results:
                self.store.delete(oid)
            results = []
            failure = self._exit_failure(spec, exc)
        except BaseException as exc:  # noqa: BLE001 - the task's error goes to the caller
            self.running = False
            for oid, _info, _c in results:
                self.store.delete(oid)
            results = []
            failure = task_failure(exc, spec.name, self.rank, spec.retry_exceptions)
        finally:
            self.running = False
            out.set_task(None)
            err.set_task(None)
            self.task = None
        self._finish((m.W_DONE, spec.task_id, results, failure))


# a leased worker polls this long after each task before it sleeps: a driver in a loop of
# round trips sends the next one within ~100 µs, and waking a sleeping process costs tens of
# microseconds on a VM (the CPU is the lease's anyway)
LEASE_SPIN = 0.0005


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # pragma: no cover - not Linux
        pass


def main(fd: int) -> None:
    _die_with_parent()
    conn = Channel(fd)
    given = os.environ.pop("MPIRAY_WORKER_CONTEXT", None)
    if given is None:  # started ahead of its raylet's job (pool.prestart): it comes first
        try:
            ctx = conn.recv()[1]
        except (EOFError, OSError):
            return  # not wanted after all
    else:
        ctx = json.loads(given)
    if ctx.get("arena"):  # forked by the raylet's zygote: its arena is mapped here too
        from .._store import regions

        regions.attach(*ctx["arena"])
    rt = WorkerRuntime(conn, ctx)
    _api._set_worker_runtime(rt)
    out, err = PrefixedStream(sys.stdout, ctx), PrefixedStream(sys.stderr, ctx)
    if ctx.get("log_to_driver", True):
        sys.stdout, sys.stderr = out, err
    signal.signal(signal.SIGINT, rt.on_sigint)
    try:
        conn.send((m.W_READY, os.getpid()))
    except OSError:
        return  # the raylet stopped before this worker was up
    while True:
        src = conn
        try:
            if conn.inbox.messages:
                pass  # read with the one before
            elif rt.lease_conn is not None and rt.lease_conn.inbox.messages:
                src = rt.lease_conn
            elif rt.lease_conn is None:
                while rt.store.maps and not conn.poll(1.0):
                    rt.store.maps.prune()  # an idle worker lets go of freed files it mapped
            else:
                ready = rt.lease_poll.poll(0)
                spin_until = time.monotonic() + LEASE_SPIN
                while not ready and time.monotonic() < spin_until:
                    os.sched_yield()  # the lease's CPU is the driver's: stay awake for its next task
                    ready = rt.lease_poll.poll(0)
                if not ready:
                    ready = rt.lease_poll.poll(1000)
                if not ready:
                    rt.store.maps.prune()
                    continue
                src = rt.lease_conn if any(fd == rt.lease_conn.fileno() for fd, _ in ready) else conn
            try:
                msg = src.recv()
            except (EOFError, OSError):
                if src is conn:
                    raise
                msg = (m.W_UNLEASE,)  # rank 0 closed the lease
        except (EOFError, OSError):
            break
        if msg[0] == m.W_RUN:
            _, spec, func, deps, gpus = msg
            rt.lease_task = spec if src is not conn else None
            try:
                rt.run(spec, func, deps, gpus, out, err)
                if rt.tracker.changes and rt.lease_conn is None:  # refs its arguments held
                    rt.send((m.W_REFS, rt.tracker.drain()))  # (an actor's: it may idle now)
            except (BrokenPipeError, ConnectionResetError, EOFError):
                break  # the raylet is gone (shutdown): nobody wants the result
            if rt.exit_after:
                break
        elif msg[0] == m.W_LEASE:
            rt.open_lease(msg[1], msg[2])
        elif msg[0] == m.W_UNLEASE:
            rt.drop_lease()
        elif msg[0] == m.W_EXIT:
            break
    out.flush()
    err.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]))
