"""The raylet: one per rank > 0.  Local queue, worker pool, node store, pulls.

::

    rank 0 ──TASKS──> Raylet.on_tasks ──(deps local? else PULL)──> queue
                                                                    │ fits local resources
                      worker <──W_RUN── dispatch() <────────────────┘
                      worker ──W_DONE──> on_w_done ──DONE──> rank 0
                      worker ──W_GET───> on_w_get ──SUBSCRIBE──> rank 0 ──OBJECTS──> reply W_OBJECTS
                      (a worker blocked in get releases its CPU: BLOCKED/UNBLOCKED)

The loop never blocks: it waits on the workers' sockets with a timeout from
``Backoff`` (short right after activity, long when idle) and polls MPI in
between.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from collections import deque
from typing import Any

from .._backoff import Backoff, delivery_poll_interval, tighten_timer_slack
from .._liveness import process_alive
from .._protocol import messages as m
from .._protocol.messages import Failure, is_method
from .._store.shm import Store, check_shared_memory, register_spill_root
from .._store.transfer import Transfers
from .actors import RayletActors
from .ahead import RayletAhead
from .leases import RayletLeases
from .local import GetRequest, LocalObjects, LocalTask
from .pool import Pool, Worker

UNIT = 10_000
# A raylet makes no full garbage collection while busy, only when its loop goes idle, at
# most this often: its tables hold ~170,000 objects after a burst of tiny tasks (the recent
# objects of ``LocalObjects``), and a full collection then took 50-70 ms, in the middle of a
# map+reduce (one sample in five ran at half speed).  It runs no user code (values stay bytes).
FULL_GC_EVERY = 5.0
# a raylet gives rank 0 this many heartbeat limits of silence before it ends itself: rank 0's
# heartbeats come from its service thread, which a driver stuck in a C call holding the GIL
# can delay (the pid check catches a dead rank 0 on the same host at once)
ZERO_SILENCE_FACTOR = 3
SPIN_SECONDS = 0.001  # after activity the loop polls without sleeping this long (yielding the core)


class Raylet(RayletLeases, RayletAhead, RayletActors):
    def __init__(self, transport: Any, config: Any, session: str, hosts: list[str], node: dict,
                 driver_pid: int | None, start_workers: bool = True, early: Any = None):
        self.t = transport
        self.config = config
        self.rank = transport.rank
        self.session = session
        self.hosts = hosts
        self.node = node
        self.driver_pid = driver_pid if hosts[0] == hosts[transport.rank] else None
        self.last_zero = time.monotonic()  # when rank 0 was last heard from
        self.total = dict(node["resources"])
        from .resources import store_capacity

        self.store = Store(session, self.rank, config.store_root, config.spill_dir)
        self.store.create()
        register_spill_root(self.store)
        self.store.capacity = check_shared_memory(self.store.root, store_capacity(
            config, self.total.get("memory", 0) // UNIT))
        self.capacity = self.store.capacity
        self.avail = dict(self.total)
        self.gpu_free = {g: UNIT for g in node["gpu_ids"]}
        self.funcs: dict[str, bytes] = {}
        self.durations: dict[str, float] = {}  # func id -> recent run time (s)
        self.dep_waiters: dict[str, list[LocalTask]] = {}  # input id -> tasks sent here early
        self.local = LocalObjects()  # objects made on this node: answers gets without rank 0
        self.xfer = Transfers(transport, self.store, self._pulled, self._pull_lost, self._check_driver,
                              self._delivered)
        self.xfer.near = {r for r, h in enumerate(hosts) if h == hosts[self.rank] and r != self.rank}
        self.regions: Any = None  # _store/regions.RegionCache: other hosts' objects, one copy each
        # objects an owner is Putting into this rank's arena -> seconds between polls for its end
        self.delivering: dict[str, float] = {}
        self.pull_started: dict[str, float] = {}  # oid -> when its bytes were asked for
        self.recent_pulls: deque = deque(maxlen=32)  # (oid, bytes, seconds, way), for nodes()
        self.chained = 0  # tasks sent to the worker running the task they wait for (_chain)
        self.interrupted: set[str] = set()  # tasks with a named interrupt file (_interrupt)
        self.unreported = False  # recent_pulls or chained changed since the last heartbeat
        self.queue: deque[LocalTask] = deque()
        self.waiting: dict[str, LocalTask] = {}  # every task sent here and not yet done
        self.pulls: dict[str, list] = {}  # oid -> [LocalTask | GetRequest]
        self.obj_waiters: dict[str, list[GetRequest]] = {}
        ctx = {"store_capacity": self.capacity, "spill_root": os.path.dirname(self.store.spill),
               "rank": self.rank, "host": hosts[self.rank], "node_id": node["node_id"], "session": session,
               "store_root": self.store.root, "inline_limit": config.inline_limit,
               "log_to_driver": config.log_to_driver}
        self.pool = Pool(ctx, max_idle=max(1, self.total.get("CPU", 0) // UNIT) + 2)
        self.pool.early = early
        self._init_actors()
        self.running = True
        if start_workers:
            self.start_workers()

    def start_workers(self) -> None:
        """Start one worker per CPU ahead of the first task."""
        for _ in range(min(self.pool.max_idle - 2, 64)):
            self.pool.start(())

    def use_arena(self, memory: Any) -> None:
        """Other hosts' objects land in ``memory`` (this rank's arena window), one copy
        each, read by workers forked after it exists (``_store/regions.py``).  Call before
        any worker starts and while this process runs no thread (it forks the zygote)."""
        from .._store.arena import shm_room
        from .._store.regions import RegionCache
        from .zygote import Zygote

        regions = RegionCache(memory, os.path.join(self.store.root, f".regions-r{self.rank}"),
                              shm_room(os.path.dirname(self.store.root)))
        zygote = Zygote.start(regions.probe) if regions.probe is not None else None
        if zygote is None:
            regions.close()
            return  # workers start as fresh interpreters and pull as before
        self.regions = regions
        self.pool.zygote, self.pool.zygote_probe = zygote, regions.probe
        self.pool.context["arena"] = [regions.address, regions.size, regions.pin_path]

    # -- main loop ---------------------------------------------------------
    def serve(self) -> None:
        tighten_timer_slack()
        every_sender_pokes = self.pool.wake is not None and all(h == self.hosts[self.rank]
                                                                for h in self.hosts)
        backoff, last_check = Backoff(spin=SPIN_SECONDS, poked=every_sender_pokes), 0.0
        delay = backoff.fast
        young, middle, _old = gc.get_threshold()
        gc.set_threshold(young, middle, 1 << 30)  # full collections: below, when idle
        last_full_gc, busy_since_gc = time.monotonic(), False
        while self.running:
            busy = False
            batches = self.t.poll()
            for src, batch in batches:
                if src == 0:
                    self.last_zero = time.monotonic()
                for msg in batch:
                    if msg[0] != m.HEARTBEAT:  # not activity: an idle loop stays idle
                        busy = True
                    getattr(self, "on_" + msg[0])(src, *msg[1:])
            if not self.running:
                break
            ready = self.pool.ready(0 if busy else delay)
            poked, self.pool.poked = self.pool.poked, False  # a rank of this host sent something
            for w in ready:
                busy = True
                self._from_worker(w)
            if not delay and not busy and not ready:
                os.sched_yield()  # spinning right after activity: let a worker have the core
            self._dispatch()
            if self.xfer.puts:
                self.xfer.pump_puts()
            if self.xfer.busy():
                busy = True
            self.t.flush()
            now = time.monotonic()
            if busy:
                backoff.reset()
                busy_since_gc = True
            delay = backoff.next()
            if busy_since_gc and delay >= backoff.idle and now - last_full_gc > FULL_GC_EVERY:
                gc.collect()
                last_full_gc, busy_since_gc = time.monotonic(), False
            if self.delivering:  # an owner Puts: its DELIVERED is to be seen soon after its end;
                # polling faster, even right after activity, only took the copy's CPU (control
                # messages wait for this interval meanwhile: at most 1 ms, for 640 MB and up)
                delay = max(backoff.fast, min(self.delivering.values()))
            if poked:  # poll again at once; what came decides whether the loop wakes up (a
                delay = 0.0  # heartbeat does not: an idle loop stays idle)
                backoff.poked(now)
            if now - last_check > 1.0:
                last_check = now
                self.pool.reap()
                self._check_driver()
                if self.unreported:
                    self.unreported = False
                    self.t.send(0, (m.HEARTBEAT, {"pulls": list(self.recent_pulls),
                                                  "chained": self.chained}))
                else:
                    self.t.send(0, (m.HEARTBEAT,))

    def _check_driver(self) -> None:
        """Rank 0 gone (its process on this host, or silent for the heartbeat limit):
        end this rank, its workers and its objects; nothing here can be used any more."""
        why = None
        if self.driver_pid is not None and not process_alive(self.driver_pid):
            why = "its process is gone"
        elif time.monotonic() - self.last_zero > ZERO_SILENCE_FACTOR * self.config.heartbeat_timeout:
            why = f"it sent nothing for {time.monotonic() - self.last_zero:.0f} s"
        if why is None:
            return
        try:
            self.end(f"mpiray: rank {self.rank} (host {self.hosts[self.rank]}) is ending: rank 0 "
                     f"(the driver, host {self.hosts[0]}) {why}.")
        finally:
            os._exit(1)

    def end(self, message: str) -> None:
        """The job is over for this rank: say why, stop the workers, remove this host's
        share of the job's objects (the other ranks are ending too)."""
        import shutil

        os.write(2, (message + "\n").encode())
        self.pool.shutdown(timeout=1.0)
        if self.regions is not None:
            self.regions.close()
        self.store.destroy()
        shutil.rmtree(self.store.root, ignore_errors=True)

    def on_hb(self, src: int) -> None:
        pass  # rank 0 is alive (noted for every message from it)

    # -- from rank 0 -------------------------------------------------------
    def on_tasks(self, src: int, spec: m.TaskSpec, func: bytes | None, deps: dict,
                 epoch: int = 0) -> None:
        if func is not None:
            self.funcs[spec.func_id] = func
        task = LocalTask(spec, {})
        if spec.method is not None and is_method(spec) and not self._call_arrived(task, epoch):
            return
        self.waiting[spec.task_id] = task
        lost = []
        for oid, info in deps.items():
            if info[0] == "pending":  # being made here (or already made): wait for it locally
                local = self.local.get(oid)
                if local is not None and local[0] == "path" and not os.path.exists(local[1]):
                    local = None  # an older copy that was lost; the new one is on its way
                if local is None:
                    if oid.rsplit(".", 1)[0] not in self.waiting:
                        lost.append(oid)  # made and forgotten, or failed: rank 0 knows
                        continue
                    self.dep_waiters.setdefault(oid, []).append(task)
                    task.missing += 1
                    continue
                task.deps[oid] = local
                continue
            local = self._localize(oid, info, task)
            if local is None:
                task.missing += 1
            elif local[0] == "missing":
                lost.append(oid)
            else:
                task.deps[oid] = local
        if lost:
            self._lost_dependency(task, lost)
        elif task.missing == 0:
            self.queue.append(task)

    def _localize(self, oid: str, info: tuple, waiter: Any) -> tuple | None:
        """A local ObjInfo for ``info``; ("missing",) if its file is gone; or None after
        starting a pull that will call back."""
        if info[0] != "shm":
            return info
        owner = info[1]
        path = self.store.locate(oid)
        if path is not None or owner == self.rank:
            pass
        elif self.config.share_host_memory and self.hosts[owner] == self.hosts[self.rank]:
            path = self.store.locate(oid, owner)
        else:
            user = self._region_user(waiter) if self.regions is not None else None
            if user is not None and self.regions.lookup(oid) is not None:
                return self.regions.use(oid, user)
            waiters = self.pulls.get(oid)
            if waiters is None:
                self.pulls[oid] = [waiter]
                offset = None
                if user is not None:
                    offset = self.regions.reserve(oid, info[2], self.waiting.__contains__)
                if offset is not None:  # the owner Puts it straight into this rank's arena
                    self.t.send(owner, (m.DELIVER, oid, self.rank, offset, info[2]))
                    self.delivering[oid] = delivery_poll_interval(info[2])
                else:
                    self.xfer.request(oid, owner)
                self.pull_started[oid] = time.monotonic()
            else:
                waiters.append(waiter)
            return None
        return ("path", path) if path is not None else ("missing",)

    def _region_user(self, waiter: Any) -> str | None:
        """The task a region copy would be handed to (in use until it is done)."""
        if isinstance(waiter, LocalTask):
            return waiter.spec.task_id
        task = waiter.worker.task
        return task.spec.task_id if task is not None and waiter.worker.leased is None else None

    def _lost_dependency(self, task: LocalTask, lost: list[str]) -> None:
        """Some argument's bytes are gone: hand the task back so rank 0 rebuilds them."""
        if self.waiting.pop(task.spec.task_id, None) is None:
            return
        spec = task.spec
        failure = Failure("lostdep", None, "ObjectLostError", f"arguments {lost} are lost", "",
                          spec.name, f"rank {self.rank}", lost=tuple(lost))
        self.t.send(0, (m.DONE, spec.task_id, [], failure))
        self._made_nothing(spec)
        if spec.method is not None and is_method(spec):  # no later call may pass it
            self._hand_back_calls(self.actors.get(spec.actor), task.epoch, task)

    # -- pulls (see _store/transfer.py) ------------------------------------
    def on_pull(self, src: int, oid: str, requester: int) -> None:
        self.xfer.on_pull(src, oid, requester)

    def on_data(self, src: int, oid: str, nbytes: int) -> None:
        self.xfer.on_data(src, oid, nbytes)

    def on_chunk(self, src: int, oid: str, off: int, slot: int, n: int) -> None:
        self.xfer.on_chunk(src, oid, off, slot, n)

    def on_slot_free(self, src: int, oid: str, slot: int) -> None:
        self.xfer.on_slot_free(src, oid, slot)

    def on_deliver(self, src: int, oid: str, requester: int, offset: int, room: int) -> None:
        self.xfer.on_deliver(src, oid, requester, offset, room)

    def on_delivered(self, src: int, oid: str, nbytes: int) -> None:
        self.xfer.on_delivered(src, oid, nbytes)

    def _delivered(self, oid: str, src: int, nbytes: int) -> None:
        """An owner finished Putting ``oid`` into this rank's arena (``regions.py``)."""
        self.delivering.pop(oid, None)
        if nbytes >= 0:
            self.t.sync_arena()
            self.regions.filled(oid, nbytes)
            self._timed(oid, nbytes, "put")
            self._hand_out(oid, None, src)
            return
        self.regions.drop(oid)
        if nbytes == -1:
            self._pull_lost(oid, src)
        else:  # -2: bigger than the room asked for (cannot happen for a known size): pull it
            self.xfer.request(oid, src)

    def _pulled(self, oid: str, src: int) -> None:
        self.t.send(0, (m.COPIED, oid))
        self._timed(oid, self.store.sizes.get(oid, 0), "get")
        self._hand_out(oid, ("path", self.store.path(oid)), src)

    def _timed(self, oid: str, nbytes: int, way: str) -> None:
        """Note how long the bytes of ``oid`` took to arrive (rank 0 hears it with the next
        heartbeat; ``nodes()`` shows it): ``put`` into the arena, or ``get`` by staging."""
        started = self.pull_started.pop(oid, None)
        if started is not None:
            self.recent_pulls.append((oid, nbytes, time.monotonic() - started, way))
            self.unreported = True

    def _hand_out(self, oid: str, local: tuple | None, src: int) -> None:
        """The bytes of ``oid`` are here now: in ``local``, or (None) in a region copy."""
        others = []
        for waiter in self.pulls.pop(oid, []):
            if local is None:
                user = self._region_user(waiter)
                if user is None:  # a get outside any task here: it reads a pulled file
                    if not waiter.stale:
                        others.append(waiter)
                    continue
                info = self.regions.use(oid, user)
            else:
                info = local
            if isinstance(waiter, LocalTask):
                waiter.deps[oid] = info
                waiter.missing -= 1
                # (a task handed back and sent here again is a new LocalTask: not this one)
                if waiter.missing == 0 and self.waiting.get(waiter.spec.task_id) is waiter:
                    self.queue.append(waiter)
            else:
                self._got(waiter, oid, info)
        if others:
            self.pulls[oid] = others
            self.xfer.request(oid, src)

    def _pull_lost(self, oid: str, src: int) -> None:
        self.pull_started.pop(oid, None)
        for waiter in self.pulls.pop(oid, []):
            if isinstance(waiter, LocalTask):
                self._lost_dependency(waiter, [oid])
            else:
                self._resubscribe(waiter, oid, src)

    def _resubscribe(self, req: "GetRequest", oid: str, owner: int) -> None:
        """A worker waits for ``oid`` but its bytes at ``owner`` are gone: report it (that
        copy, not this rank's) and wait again."""
        self.t.send(0, (m.LOST, [oid], owner))
        self.obj_waiters.setdefault(oid, []).append(req)
        self.t.send(0, (m.SUBSCRIBE, [oid]))

    def on_cancel(self, src: int, task_id: str, force: bool) -> None:
        task = self.waiting.get(task_id)
        if task is None:
            return  # finished meanwhile
        w = task.worker
        if w is None:  # still queued here: it never runs
            try:
                self.queue.remove(task)
            except ValueError:
                pass
            self._never_runs(task)
        elif task in w.ahead:  # prefetched, not started: interrupt it once it starts
            task.cancel = force
        else:
            self._interrupt(w, force, task)

    def _never_runs(self, task: LocalTask) -> None:
        """A cancelled task that did not start here: report it cancelled."""
        self.waiting.pop(task.spec.task_id, None)
        failure = Failure("cancelled", None, "TaskCancelledError", "cancelled", "",
                          task.spec.name, f"rank {self.rank}")
        self.t.send(0, (m.DONE, task.spec.task_id, [], failure))
        self._made_nothing(task.spec)

    def _interrupt(self, w: Worker, force: bool, task: LocalTask) -> None:
        if force:
            w.proc.kill()  # reported through _worker_died; rank 0 knows it was cancelled
            return
        tid = task.spec.task_id  # KeyboardInterrupt inside that task only (m.interrupt_path)
        try:
            os.close(os.open(m.interrupt_path(self.store.root, tid), os.O_CREAT | os.O_WRONLY, 0o600))
        except OSError:
            return  # the session folder is gone: the job is ending
        self.interrupted.add(tid)
        try:
            os.kill(w.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def _interrupt_over(self, task_id: str) -> None:
        """The task that a named interrupt was for has ended: remove its file."""
        self.interrupted.discard(task_id)
        try:
            os.unlink(m.interrupt_path(self.store.root, task_id))
        except OSError:
            pass

    def _ran(self, task: LocalTask) -> None:
        """Keep a running average of each function's run time (decides prefetching)."""
        took = time.monotonic() - task.started
        old = self.durations.get(task.spec.func_id)
        self.durations[task.spec.func_id] = took if old is None else 0.8 * old + 0.2 * took

    def on_objects(self, src: int, items: list) -> None:
        for oid, info in items:
            for req in self.obj_waiters.pop(oid, []):
                if req.stale:
                    continue
                local = self._localize(oid, info, req)
                if local is None:
                    continue
                if local[0] == "missing":
                    self._resubscribe(req, oid, info[1])
                else:
                    self._got(req, oid, local)

    def on_free(self, src: int, oids: list[str]) -> None:
        for oid in oids:
            self.store.delete(oid)
            self.local.pop(oid)

    def on_shutdown(self, src: int) -> None:
        self.pool.shutdown()
        if self.regions is not None:
            self.regions.close()
        pipe = self.pool.wake
        if pipe is not None:  # its pipe lives in the session folder
            self.pool.watch_wake(None)
            pipe.close()
        self.store.destroy()
        self.t.send(0, (m.BYE,))
        self.t.drain_sends()
        self.running = False

    # -- local dispatch ----------------------------------------------------
    def _fits(self, demand: dict) -> bool:
        for k, v in demand.items():
            if k == "GPU":
                if not self._pick_gpus(v):
                    return False
            elif self.avail.get(k, 0) < v:
                return False
        return True

    def _pick_gpus(self, units: int) -> tuple | None:
        if units >= UNIT:
            free = [g for g, f in self.gpu_free.items() if f == UNIT]
            n = units // UNIT
            return tuple(free[:n]) if len(free) >= n else None
        best = None
        for g, f in self.gpu_free.items():  # fullest GPU that still has room: pack fractions
            if f >= units and (best is None or f < self.gpu_free[best]):
                best = g
        return (best,) if best is not None else None

    def _dispatch(self) -> None:
        skipped, sent = 0, []
        while len(self.queue) > skipped:
            task = self.queue[0]
            if task.spec.method is not None and is_method(task.spec):  # its inputs are here:
                self.queue.popleft()  # it runs when its actor is free and the calls before it ran
                self.actor_kick.add(task.spec.actor)
                continue
            demand = task.spec.demand
            if not self._fits(demand):
                self.queue.rotate(-1)
                skipped += 1
                continue
            self.queue.popleft()
            if task.cancel is not None:  # cancelled while sent ahead, then handed back
                self._never_runs(task)
                continue
            gpus = self._pick_gpus(demand["GPU"]) if "GPU" in demand else ()
            for k, v in demand.items():
                if k != "GPU":
                    self.avail[k] = self.avail.get(k, 0) - v
            share = demand.get("GPU", 0)
            for g in gpus:
                self.gpu_free[g] -= min(share, UNIT)
            task.gpus = gpus
            w = self.pool.take(gpus)
            w.task = task
            if task.spec.actor is not None:  # (a creation: the worker may become an actor)
                w.refs = {}
            self._send_run(w, task)
            sent.append(w)
        if skipped:
            self.queue.rotate(skipped)
        if self.actor_kick:
            self._pump_actors(sent)
        if self.queue:
            self._prefetch(sent)
        if self.dep_waiters:
            self._chain(sent)
        for w in sent:
            if w.outbox:
                w.write_outbox()

    def _send_run(self, w: Worker, task: LocalTask) -> None:
        """Queue the task's W_RUN in the worker's outbox (``_dispatch`` writes it)."""
        task.worker = w
        func = None
        if task.spec.func_id not in w.funcs:
            w.funcs.add(task.spec.func_id)
            func = self.funcs[task.spec.func_id]
        task.started = time.monotonic()
        w.queue_message((m.W_RUN, task.spec, func, task.deps, task.gpus))

    def _release(self, task: LocalTask, blocked: bool) -> None:
        for k, v in task.spec.demand.items():
            if k == "GPU":
                continue
            if blocked and k != "CPU":
                continue
            self.avail[k] = self.avail.get(k, 0) + v
        if not blocked:
            share = task.spec.demand.get("GPU", 0)
            for g in task.gpus:
                self.gpu_free[g] += min(share, UNIT)

    # -- from workers ------------------------------------------------------
    def _from_worker(self, w: Worker) -> None:
        if not self.pool.alive(w):
            return  # removed earlier in this round
        inbox = w.inbox
        try:
            more = inbox.fill()
        except OSError:
            more = False
        while inbox.messages:  # (what it sent before it died counts)
            self._worker_message(w, inbox.messages.popleft())
            if not self.pool.alive(w):
                return
        if not more:
            self._worker_died(w)

    def _worker_message(self, w: Worker, msg: tuple) -> None:
        kind = msg[0]
        pending = w.cancel_next
        if pending is not None:  # interrupt only if that task still runs
            w.cancel_next = None
            if w.task is pending and not (kind == m.W_DONE and msg[1] == pending.spec.task_id):
                self._interrupt(w, pending.cancel, pending)
        if kind == m.W_DONE and w.leased is not None:
            self._leased_done(w, msg)
        elif kind == m.W_DONE:
            task = w.task
            _, task_id, results, failure = msg
            self.waiting.pop(task_id, None)
            if task_id in self.interrupted:
                self._interrupt_over(task_id)
            if w.get_req is not None:
                w.get_req.stale = True
                w.get_req = None
            if task is not None:
                if w.blocked:
                    self._reacquire_cpu(task)
                    w.blocked = False
                if failure is None or failure.kind != "lostdep":  # (no run: it took no time)
                    self._ran(task)
                if task.spec.actor is not None:  # a creation or a call (_node/actors.py)
                    self._actor_task_done(w, task, failure)
                elif w.ahead:  # the next prefetched task starts now, on these resources
                    nxt = w.task = w.ahead.popleft()
                    nxt.started = time.monotonic()
                    if nxt.cancel is not None:  # cancelled while it waited in the socket
                        if w.inbox.messages or w.conn.poll(0):
                            w.cancel_next = nxt  # it may be done already: its next message says
                        else:
                            self._interrupt(w, nxt.cancel, nxt)
                elif task.lease is not None and self._lend(w, task, failure):
                    pass  # the worker and its CPU now serve rank 0 directly
                else:  # (a lease asked for and not lent: rank 0 sees DONE without LEASED)
                    self._release(task, blocked=False)
                    self.pool.give_back(w)
            else:
                self.pool.give_back(w)
            took = self.durations.get(task.spec.func_id) if task is not None else None
            self.t.send(0, (m.DONE, task_id, results, failure, took))
            for oid, info, _contained in results:
                self._made_here(oid, info)
            if failure is not None and task is not None:
                self._made_nothing(task.spec)
                if task.spec.actor is not None:
                    self._actor_task_failed(task, failure)
        elif kind == m.W_SUBMIT:
            if w.refs is not None:  # an actor's: it holds the results' refs
                self._note_refs(w, [(oid, 1) for oid in msg[1].return_ids])
            self._worker_submit(msg[1], msg[2])
        elif kind == m.W_BOUNCE:  # a prefetched task reached a worker now blocked in get()
            for nxt in w.ahead:
                if nxt.spec.task_id == msg[1]:
                    w.ahead.remove(nxt)
                    self._take_back(nxt)
                    break
        elif kind == m.W_PUT:
            if w.refs is not None:
                self._note_refs(w, [(msg[1], 1)])
            self.t.send(0, (m.PUT, msg[1], msg[2], msg[3]))
            self._made_here(msg[1], msg[2])
        elif kind == m.W_REFS:
            if w.refs is not None:
                self._note_refs(w, msg[1])
            self.t.send(0, (m.REFS, msg[1]))
        elif kind == m.W_GET:
            self._worker_get(w, msg[1], msg[2], msg[3])
        elif kind == m.W_UNGET:  # the worker's get/wait timed out: answer with what is here
            req = w.get_req
            if req is not None and req.rid == msg[1]:
                self._answer(req)
        elif kind == m.W_READY:
            w.ready = True
        elif kind == m.W_UNLEASED:
            self._unleased(w)
        elif kind == m.W_LEASE_TASK:
            self._lease_task(w, msg[1])
        elif kind == m.W_MADE:
            self._made_by_lease(msg[1])
        elif kind == m.W_KILL:
            self.t.send(0, (m.KILL, msg[1], msg[2]))
        elif kind == m.W_LOOKUP:
            self._lookup(w, msg[1], msg[2])
        else:
            raise RuntimeError(f"raylet {self.rank} got an unknown message {kind!r} from worker {w.pid}")

    # -- two-level scheduling: what this node can settle without rank 0 ----
    def _made_here(self, oid: str, info: tuple) -> None:
        """Remember an object made on this node, and hand it to workers waiting for it."""
        if info[0] == "shm":
            self.store.note(oid, info[2])
            local = ("path", self.store.path(oid))
        else:
            local = info
        self.local.put(oid, local)
        for req in self.obj_waiters.pop(oid, []):
            if not req.stale:
                self._got(req, oid, local)
        for task in self.dep_waiters.pop(oid, []):
            task.deps[oid] = local
            task.missing -= 1
            if task.missing == 0 and task.spec.task_id in self.waiting:
                self.queue.append(task)

    def _made_nothing(self, spec: m.TaskSpec) -> None:
        """A task here ended without results: tasks waiting here for them go back to rank 0."""
        for oid in spec.return_ids:
            for task in self.dep_waiters.pop(oid, []):
                self._lost_dependency(task, [oid])

    def _worker_submit(self, spec: m.TaskSpec, func: bytes | None) -> None:
        """Run a nested task here when it fits now and its inputs are here; else ask rank 0."""
        if func is not None:
            self.funcs[spec.func_id] = func
        deps = {oid: self.local.get(oid) for oid in spec.deps}
        if (spec.strategy == "DEFAULT" and spec.actor is None and not self.queue and spec.func_id in self.funcs
                and all(d is not None for d in deps.values()) and self._fits(spec.demand)):
            self.t.send(0, (m.SUBMIT, spec, func, self.rank))
            task = LocalTask(spec, deps)
            self.waiting[spec.task_id] = task
            self.queue.append(task)
        else:
            self.t.send(0, (m.SUBMIT, spec, func, None))

    def _worker_get(self, w: Worker, rid: int, ids: list[str], needed: int) -> None:
        ids = list(dict.fromkeys(ids))
        known = [(oid, self.local.get(oid)) for oid in ids]
        known = [(oid, k) for oid, k in known if k is not None and (k[0] != "path" or os.path.exists(k[1]))]
        if len(known) >= needed:
            w.conn.send((m.W_OBJECTS, rid, known))  # no round trip to rank 0
            return
        req = GetRequest(w, rid, ids, needed)
        w.get_req = req
        if w.task is not None and not w.blocked:
            w.blocked = True
            self._release(w.task, blocked=True)
            self.t.send(0, (m.BLOCKED, w.task.spec.task_id))
        for oid in req.ids:
            self.obj_waiters.setdefault(oid, []).append(req)
        self.t.send(0, (m.SUBSCRIBE, req.ids))

    def _got(self, req: GetRequest, oid: str, local: tuple) -> None:
        if req.stale:
            return
        req.infos[oid] = local
        if len(req.infos) >= req.needed:
            self._answer(req)

    def _answer(self, req: GetRequest) -> None:
        """Reply to a worker's get/wait (complete, or partial after its timeout); unblock it."""
        req.stale = True
        w = req.worker
        w.get_req = None
        if not self.pool.alive(w):
            return  # the worker died meanwhile
        if w.blocked and w.task is not None:
            self._reacquire_cpu(w.task)
            self.t.send(0, (m.UNBLOCKED, w.task.spec.task_id))
        w.blocked = False
        w.conn.send((m.W_OBJECTS, req.rid, list(req.infos.items())))

    def _reacquire_cpu(self, task: LocalTask) -> None:
        cpu = task.spec.demand.get("CPU", 0)
        if cpu:
            self.avail["CPU"] = self.avail.get("CPU", 0) - cpu

    def _worker_died(self, w: Worker) -> None:
        self.pool.remove(w)
        why = self.pool.exit_description(w)
        task = w.task
        if w.leased is not None:
            return self._leased_worker_died(w, why)
        if w.actor is not None:
            return self._actor_worker_died(w, why)
        if w.refs is not None:  # it died making an actor
            self._drop_worker_refs(w)
        if w.get_req is not None:
            w.get_req.stale = True
        while w.ahead:  # never started: run them elsewhere, in their order (one chained to
            self._take_back(w.ahead.pop())  # the lost task waits for its rebuild)
        if task is None:
            return
        self.waiting.pop(task.spec.task_id, None)
        if w.blocked:
            self._reacquire_cpu(task)
        self._release(task, blocked=False)
        spec = task.spec
        where = f"rank {self.rank} on host {self.hosts[self.rank]}, worker pid {w.pid}"
        msg = (f"the worker running task {spec.name} ({where}) died: {why}. "
               f"The task was tried {spec.attempt + 1} time(s) (max_retries={spec.max_retries}).")
        failure = Failure("crash", None, "WorkerCrashedError", msg, "", spec.name, where, retryable=True)
        self.t.send(0, (m.DONE, spec.task_id, [], failure))
        self._made_nothing(spec)
