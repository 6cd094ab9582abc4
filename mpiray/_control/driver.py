"""The driver's runtime: what ``mpiray.get/put/remote/wait`` do on rank 0.

The driver thread changes the GCS directly under the service's lock (it lives
in this process), then wakes the service thread to send what the GCS queued.
``get`` waits on the service's condition until its objects leave ``pending``,
then reads them: inline values from the table, stored ones zero-copy from the
node's shared memory (or pulled over MPI first when they live on another host).
"""

from __future__ import annotations

import os
import time
from typing import Any

from .. import exceptions as exc_mod
from .._objref import ObjectRef, RefTracker
from .._options import TaskOptions, from_units
from .._protocol import messages as m
from .._store.shm import Store, check_shared_memory, register_spill_root, sweep_stale
from .._values import IdGen, decode, encode, make_spec
from .._watchdog import quiet_watchdog, start_watchdog, stop_watchdog
from .deliveries import NO_ROOM, Deliveries, LookAgain
from .gcs import GCS, PENDING, lost_failure
from .lease_io import LeaseIO
from .service import Service


DRIVER_POLL_WINDOW = 0.005  # a waiting driver polls MPI itself this long, then sleeps
DRIVER_GRACE = 0.002  # after a get the service thread stays paused this long (see _stop_polling)


class DriverRuntime(Deliveries):
    is_driver = True

    def __init__(self, transport: Any, config: Any, session: str, hosts: list[str], nodes: list[dict],
                 spawned: bool, listener: Any = None):
        self.transport = transport
        self.config = config
        self.session = session
        self.hosts = hosts
        self.spawned = spawned
        self.rank = 0
        self.tracker = RefTracker()
        self.ids = IdGen(f"{session[:6]}d")
        from .._node.resources import detect, store_capacity

        self.store = Store(session, 0, config.store_root, config.spill_dir)
        sweep_stale(os.path.dirname(self.store.root))  # left by jobs that were SIGKILLed
        self.store.create()
        register_spill_root(self.store)
        self.capacity = self.store.capacity = check_shared_memory(
            self.store.root, store_capacity(config, detect()["memory"]))
        self.gcs = GCS(pipeline=config.pipeline)
        for info in nodes:
            self.gcs.add_node(info["rank"], info)
        self.service = Service(self.gcs, transport, self.store, self.tracker)
        for info in nodes:
            self.service.peers[info["rank"]] = (info["host"], info["pid"])
            if info["host"] == hosts[0]:
                self.service.same_host.add(info["rank"])
        self.service.silence_limit = config.heartbeat_timeout
        self.service.wake_pipe = transport.enable_wake(self.store.root, hosts)
        self.arena: Any = None  # _store/arena.Arena when rank 0 opened a delivery arena
        self.delivered: Any = None  # oid -> exporter of its arena region, while a value views it
        if getattr(transport, "arena", None) is not None and len(transport.arena):  # _startup.py
            import weakref

            from .._store import arena as arena_mod  # not before MPI starts (see _startup.py)

            self.arena = self.service.arena = arena_mod.Arena(transport.arena, arena_mod.shm_room())
            self.delivered = weakref.WeakValueDictionary()
        if config.lease_workers:  # a direct line to one worker of this host (lease.py)
            leases = LeaseIO(session)
            if leases.enabled:
                self.service.leases = leases
                self.gcs.lease_host = hosts[0]
        self.watchdog = start_watchdog(listener, nodes, hosts[0])  # names a rank whose death ends the job
        self.service.on_fatal = lambda: quiet_watchdog(self.watchdog)  # the driver names it itself
        self.exported: set[str] = set()
        self.closed = False
        self.service.start()

    # -- tasks -------------------------------------------------------------
    def submit(self, func_id: str, func_bytes: bytes | None, name: str, args: tuple, kwargs: dict,
               options: TaskOptions, amend: Any = None) -> list[ObjectRef]:
        self._check()
        spec = make_spec(self.ids.task(), name, func_id, args, kwargs, options,
                         self.config.inline_limit, self._store_args)
        if amend is not None:  # an actor's creation or call (_actor.py)
            amend(spec)
        with self.service.cond:
            self._sync_refs()
            first = func_bytes is not None and func_id not in self.exported
            try:
                self.gcs.submit(spec, func_bytes if first else None, 0)
            except Exception:  # refused (infeasible, a name in use): nothing of it stays
                if spec.args_ref is not None:
                    self.gcs.refs([(spec.args_ref, -1)])
                raise
            if first:
                self.exported.add(func_id)
            if spec.args_ref is not None:
                self.gcs.refs([(spec.args_ref, -1)])  # the task's pin keeps it now
            refs = [ObjectRef(oid, None) for oid in spec.return_ids]
        for r in refs:  # the creator's hold was counted by submit()
            self._adopt(r)
        self._push()
        return refs

    def _push(self) -> None:
        """Send what the GCS queued now, from this thread, or let the service thread do it."""
        if self.service.try_step() is None:
            self.service.wake()

    def _adopt(self, ref: ObjectRef) -> None:
        """Count an ObjectRef whose first hold the GCS already knows about."""
        self.tracker.add(ref.id, announce=False)
        ref._tracker = self.tracker

    def _sync_refs(self) -> None:
        changes = self.tracker.drain()
        if changes:
            self.gcs.refs(changes)

    def _store_args(self, blob: Any) -> str:
        oid = self.ids.put()
        size = self.store.write(oid, blob)
        with self.service.cond:
            self.gcs.put(oid, ("shm", 0, size), blob.refs, 0)
        return oid

    # -- objects -----------------------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        self._check()
        if isinstance(value, ObjectRef):
            raise TypeError("put() of an ObjectRef is not allowed; pass the ref itself instead")
        oid = self.ids.put()
        info, contained = encode(oid, value, self.config.inline_limit, self.store, 0, self.capacity,
                                 self._free_dropped)
        with self.service.cond:
            self._sync_refs()
            self.gcs.put(oid, info, contained, 0)
        ref = ObjectRef(oid, None)
        self._adopt(ref)
        if info[0] == "shm":  # the frees of dropped stored objects keep up with a put loop,
            self.service.step()  # even while the service thread is preempted mid-step
        else:
            self._push()
        return ref

    def _free_dropped(self) -> None:
        """Before a big put is written: free the objects whose refs were just dropped, so the
        file of the one before (a loop of puts) is parked for this one to reuse (its pages
        are there; fresh tmpfs pages are zeroed on first touch: 2-3 GB/s instead of 11)."""
        if self.tracker.changes:
            with self.service.cond:
                self._sync_refs()
            self.service.step()

    def get(self, refs: list[ObjectRef], timeout: float | None) -> list[Any]:
        self._check()
        ids = [r.id for r in refs]
        end = None if timeout is None else time.monotonic() + timeout
        infos = self._wait_ready(ids, len(set(ids)), timeout, all_needed=True)
        ahead = self._deliveries_ahead(ids, infos)
        out = []
        try:
            for oid in ids:
                while True:
                    info = infos[oid]
                    try:
                        if info[0] == "shm" and not self._can_map(info[1]):
                            value = self._deliver(oid, info, end, ahead.pop(oid, None))
                            if value is not NO_ROOM:
                                out.append(value)
                                break
                            info = self._pull(oid, info, timeout)
                        out.append(decode(oid, info, self.tracker, self.store))
                        break
                    except (FileNotFoundError, LookAgain) as exc:  # bytes gone: rebuild or fail
                        if isinstance(exc, FileNotFoundError):
                            with self.service.cond:
                                self.gcs.object_lost(oid, info[1])
                            self.service.wake()
                        left = None if end is None else max(0.0, end - time.monotonic())
                        infos[oid] = self._wait_ready([oid], 1, left, all_needed=True)[oid]
        finally:
            if ahead:  # asked for, not waited for (an earlier object failed the get)
                with self.service.cond:
                    for d in ahead.values():
                        self._unwait(d)
        return out

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._check()
        with self.service.cond:
            entry = self.gcs.objects.get(ref.id)
            if entry is not None and entry.producer is not None:
                task = self.gcs.tasks.get(entry.producer)
                if force and task is not None and task.spec.actor is not None:
                    raise ValueError("cancel(force=True) is not allowed for an actor's task: it "
                                     "would kill the actor; use mpiray.kill(actor) for that")
                self.gcs.cancel(entry.producer, force, recursive)
        self._push()  # sends the CANCELs and wakes waiters of the cancelled objects

    # -- actors (_actor.py) ------------------------------------------------
    def kill_actor(self, actor_id: str, no_restart: bool) -> None:
        self._check()
        with self.service.cond:
            self._sync_refs()
            self.gcs.kill_actor(actor_id, no_restart)
        self._push()

    def get_actor(self, name: str) -> tuple:
        self._check()
        with self.service.cond:
            found = self.gcs.lookup_actor(name)
        if found is None:
            raise ValueError(f"no live actor is named {name!r}; name one with "
                             f"Cls.options(name={name!r}).remote(...)")
        return found

    def _can_map(self, rank: int) -> bool:
        return rank == 0 or (self.config.share_host_memory and self.hosts[rank] == self.hosts[0])

    def _pull(self, oid: str, info: tuple, timeout: float | None) -> tuple:
        """Copy a stored object from another host into this rank's store."""
        end = None if timeout is None else time.monotonic() + timeout
        with self.service.cond:
            entry = self.gcs.objects.get(oid)
            if entry is not None and 0 not in entry.copies:
                self.gcs.out.append((info[1], (m.PULL, oid, 0)))
                self.service.wake()
            with self.gcs.watching({oid}):  # (a rebuild of it wakes this wait too)
                while True:
                    entry = self.gcs.objects.get(oid)
                    if entry is None:
                        raise exc_mod.ObjectLostError(f"object {oid} was freed during get()")
                    if 0 in entry.copies:
                        return ("shm", 0, info[2])
                    if entry.info != info:
                        raise LookAgain  # lost at its owner: rebuilt or moved meanwhile
                    self._cond_wait(end, oid)

    def _cond_wait(self, end: float | None, what: Any, started: float | None = None,
                   nap: float = 0.0) -> None:
        """Wait (holding ``cond``) for the GCS to change.  For the first few ms of a wait
        the driver thread polls MPI itself (no hand-off to the service thread), every
        ``nap`` seconds (0: as fast as it can, yielding the core); after that it sleeps
        until the service thread notifies it."""
        if self.service.error is not None:
            raise exc_mod.RaySystemError(f"mpiray's control thread failed: {self.service.error!r}")
        now = time.monotonic()
        remaining = None if end is None else end - now
        if remaining is not None and remaining <= 0:
            raise exc_mod.GetTimeoutError(f"get() timed out waiting for {what}")
        if started is not None and now - started < DRIVER_POLL_WINDOW:
            # the service thread stays out of the way meanwhile: two threads taking turns
            # at the GIL and the IO lock cost the reply ~20 µs more (sync 215 -> 190 µs)
            self.service.driver_polling = True
            cond = self.service.cond
            cond.release()
            try:
                progressed = self.service.try_step()
            finally:
                cond.acquire()
            if progressed:
                return
            cond.release()  # spin, yielding the core: a reply a few tens of µs away costs no
            try:            # timer wake-up (a 30 µs sleep here took ~100 µs: sync 250 -> 215 µs)
                if nap >= 5e-5:  # shorter sleeps take ~100 µs here: yield instead
                    time.sleep(nap)
                else:
                    os.sched_yield()
            finally:
                cond.acquire()
            return
        self._stop_polling(sleeping=True)
        self.service.cond.wait(0.5 if remaining is None else min(0.5, remaining))

    def _stop_polling(self, sleeping: bool = False) -> None:
        """The driver thread stops stepping: the service thread takes over again, at once
        if the driver goes to sleep, else after a short grace: a driver in a loop of round
        trips submits its next task within microseconds and sends it itself, with no
        IO-lock or GIL ping-pong with the service thread."""
        if self.service.driver_polling:
            self.service.driver_polling = False
            if sleeping:
                self.service.wake()
            elif self.gcs.driver_tasks == 0:  # a loop of round trips, not a batch in flight
                self.service.driver_grace = time.monotonic() + DRIVER_GRACE

    def _wait_ready(self, ids: list[str], needed: int, timeout: float | None,
                    all_needed: bool) -> dict[str, tuple]:
        """ObjInfo of at least ``needed`` of ``ids`` once they are not pending.

        Each wake-up looks only at ids still pending; when all are needed it stops
        at the first pending one, so a get of n results costs O(n), not O(n^2).
        """
        try:
            return self._wait_ready_locked(ids, needed, timeout, all_needed)
        finally:
            self._stop_polling()

    def _wait_ready_locked(self, ids: list[str], needed: int, timeout: float | None,
                           all_needed: bool) -> dict[str, tuple]:
        started = time.monotonic()
        end = None if timeout is None else started + timeout
        ready: dict[str, tuple] = {}
        pending = list(dict.fromkeys(ids))
        objects, watch = self.gcs.objects, self.gcs.watch
        with self.service.cond, self.gcs.watching(None) as me:
            while True:
                still = []
                for i, oid in enumerate(pending):
                    entry = objects.get(oid)
                    if entry is None:
                        ready[oid] = ("err", lost_failure(oid, "it was freed (no ObjectRef left)"))
                    elif entry.state != PENDING:
                        ready[oid] = entry.info
                    else:
                        still.append(oid)
                        if all_needed:
                            still.extend(pending[i + 1:])
                            break
                pending = still
                if len(ready) >= needed:
                    return ready
                # what wakes this thread: the first pending object when all are needed
                # (the rest are looked at once it is made), else any of them
                watch[me] = {pending[0]} if all_needed else set(pending)
                try:
                    self._cond_wait(end, f"{len(pending)} object(s)", started)
                except exc_mod.GetTimeoutError:
                    if all_needed:
                        raise exc_mod.GetTimeoutError(
                            f"get() timed out after {timeout}s: {len(pending)} of {len(set(ids))} "
                            f"object(s) not ready (e.g. {pending[0]})") from None
                    return ready

    def wait(self, refs: list[ObjectRef], num_returns: int, timeout: float | None
             ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        self._check()
        ids = [r.id for r in refs]
        ready = self._wait_ready(ids, num_returns, timeout, all_needed=False)
        done, rest = [], []
        for r in refs:
            (done if r.id in ready and len(done) < num_returns else rest).append(r)
        return done, rest

    # -- cluster info ------------------------------------------------------
    def nodes(self) -> list[dict]:
        with self.service.cond:
            out = []
            for rank, info in sorted(self.gcs.nodes.items()):
                node = self.gcs.scheduler.nodes[rank]
                out.append({"NodeID": info["node_id"], "Alive": node.alive, "NodeManagerAddress": info["host"],
                            "NodeManagerHostname": info["host"], "Rank": rank, "Pid": info["pid"],
                            "Resources": {k: from_units(v) for k, v in info["resources"].items()},
                            "GPUIDs": info.get("gpu_ids", []), "GPUs": info.get("gpus", []),
                            # the last 32 objects this rank fetched from others, as of its last
                            # heartbeat: how long from asking to the bytes being there, and how
                            # ("put": straight into its arena; "get": through staging)
                            "RecentPulls": [{"ObjectID": oid, "Bytes": n, "Seconds": sec, "Way": way}
                                            for oid, n, sec, way in info.get("recent_pulls", [])],
                            # tasks it sent to the worker running the task whose result they
                            # wait for, behind it (a chain: no round through the raylet per link)
                            "TasksChained": info.get("chained", 0)})
            return out

    def cluster_resources(self) -> dict:
        with self.service.cond:
            return {k: from_units(v) for k, v in self.gcs.scheduler.totals().items()}

    def available_resources(self) -> dict:
        with self.service.cond:
            return {k: from_units(v) for k, v in self.gcs.scheduler.available().items()}

    def context(self) -> dict:
        return {"rank": 0, "host": self.hosts[0], "node_id": "driver", "task_id": None, "pid": os.getpid(),
                "job_id": self.session, "assigned_resources": {}, "gpu_ids": [], "worker": False}

    # -- shutdown ----------------------------------------------------------
    def _check(self) -> None:
        if self.closed:
            raise exc_mod.RaySystemError("mpiray has been shut down; call mpiray.init() again to start a new cluster")
        if self.service.error is not None:
            raise exc_mod.RaySystemError(f"the mpiray cluster failed: {self.service.error}")

    def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        ranks = list(range(1, self.transport.size))
        missing = self.service.shutdown(ranks, timeout=15.0)
        self.store.destroy()
        stop_watchdog(self.watchdog)
        if not missing:
            if self.arena is not None:  # values read from it stay valid (Arena.close)
                self.arena.close(self.transport.close_arena)
            else:
                self.transport.close_arena()  # collective when opened, else nothing
            self.transport.close_stage()  # collective: every raylet frees its windows too
        self.transport.close()
        if missing:
            raise exc_mod.RaySystemError(f"ranks {missing} did not confirm shutdown in time")
