"""The GCS: tables of functions, tasks, objects and nodes.  Pure state machine.

Events come in as method calls (``submit``, ``task_done``, ``put``, ``refs``,
``subscribe`` ...), already decoded; what must be sent goes out as
``(dest_rank, message)`` pairs appended to ``self.out``.  No MPI, no threads,
no clocks: the service (``service.py``) owns the IO and the lock, and unit
tests drive this class directly and call ``validate()`` after each event.

An object's life::

    pending ──(task done / put)──> ready ──(no refs, no pins)──> freed
       └──────(task failed)──────> failed ─┘

``refcount`` counts processes holding an ObjectRef (the creator's hold comes
with the message that creates the object); ``pins`` counts pending tasks whose
arguments carry the ref and stored objects that contain it.
"""

from __future__ import annotations

import threading
from typing import Any

from .._protocol import messages as m
from .._protocol.messages import ACTOR_INIT, Failure, TaskSpec, is_method
from .actors import ActorTable, cancelled_failure
from .lease import LeaseMixin
from .scheduler import GlobalScheduler

PENDING, READY, FAILED = "pending", "ready", "failed"
PENDING_HERE = ("pending",)  # ObjInfo of an input still being made on the rank the task goes to
LOCALITY_MIN_BYTES = 1 << 20  # arguments smaller than this do not attract their task
SHORT_TASK_SECONDS = 0.002  # functions that usually run shorter get deeper node queues
MAX_DEPTH = 16  # at most this many times the usual pipeline depth
EARLY_MAX_PENDING = 8  # a task waiting for more inputs than this is never sent ahead


class ObjectEntry:
    __slots__ = ("state", "info", "refcount", "pins", "contained", "waiting_tasks",
                 "subscribers", "copies", "producer", "made_at")

    def __init__(self, state: str, info: Any = None, producer: str | None = None):
        self.state = state
        self.info = info
        self.refcount = 0
        self.pins = 0
        self.contained: tuple = ()
        self.waiting_tasks: list[str] = []
        self.subscribers: set[int] = set()
        self.copies: set[int] = set()
        self.producer = producer
        self.made_at = 0  # GCS event count when it last became ready (tells stale reports)


class TaskEntry:
    __slots__ = ("spec", "state", "rank", "missing", "owner", "blocked", "cancelled", "sent_at", "lease",
                 "rebuild")

    def __init__(self, spec: TaskSpec, owner: int):
        self.spec = spec
        self.state = "waiting"
        self.rank: int | None = None
        self.missing = 0
        self.owner = owner
        self.blocked = False
        self.cancelled = False
        self.sent_at = 0
        self.lease: str | None = None  # runs on this leased worker (lease.py)
        self.rebuild = False  # re-run to remake lost results (never on a lease: see lease.py)


def lost_failure(object_id: str, why: str) -> Failure:
    return Failure("lost", None, "ObjectLostError", f"object {object_id} is lost: {why}", "",
                   "", "")


class GCS(LeaseMixin, ActorTable):
    def __init__(self, pipeline: float = 2.0):
        self.functions: dict[str, bytes] = {}
        self.func_sent: dict[str, set[int]] = {}
        self.objects: dict[str, ObjectEntry] = {}
        self.tasks: dict[str, TaskEntry] = {}
        self.nodes: dict[int, dict] = {}
        self.lineage: dict[str, list] = {}  # task id -> [spec, live return objects]
        self.children: dict[str, set[str]] = {}  # task id -> tasks it submitted (while running)
        self.seq = 0  # counts objects becoming ready; orders reports against rebuilds
        self.deferred: dict[int, list[str]] = {}  # rank -> tasks to send there early when it has room
        self.scheduler = GlobalScheduler(pipeline)
        self.durations: dict[str, float] = {}  # func id -> its recent run time (s), from raylets
        self.out: list[tuple[int, Any]] = []
        self.changed = False  # the driver's condition is to be notified
        # driver threads waiting in get()/wait() -> the ids that would let them go on (None:
        # any); an object made that no waiter needs does not wake them
        self.watch: dict[int, Any] = {}
        self.stats = {"submitted": 0, "finished": 0, "retried": 0, "freed": 0, "rebuilt": 0}
        self._init_leases()
        self._init_actors()

    def watching(self, ids: set | None) -> "_Watching":
        """``with gcs.watching(ids) as me``: meanwhile the calling thread is woken only by
        the objects ``ids`` (None: any); ``watch[me]`` changes them."""
        return _Watching(self.watch, ids)

    # -- nodes -------------------------------------------------------------
    def add_node(self, rank: int, info: dict) -> None:
        self.nodes[rank] = dict(info, alive=True)
        self.scheduler.add_node(rank, info["node_id"], info["resources"])

    # -- tasks -------------------------------------------------------------
    def submit(self, spec: TaskSpec, func_bytes: bytes | None, owner: int,
               placed: int | None = None) -> None:
        """A new task; raises InfeasibleResourceError before changing anything.

        ``placed``: the raylet that submitted it already runs it (two-level scheduling:
        it fit there and its inputs were there), so it is recorded as running there.
        """
        if placed is None:
            self.scheduler.check_feasible(spec.demand, spec.strategy)
        if spec.actor is not None and self._check_actor_name(spec):
            return self._alias_actor(spec)
        if func_bytes is not None:
            self.functions.setdefault(spec.func_id, func_bytes)
        self.stats["submitted"] += 1
        for oid in spec.return_ids:
            entry = self.objects[oid] = ObjectEntry(PENDING, producer=spec.task_id)
            entry.refcount = 1  # the submitter's ObjectRef
        task = self.tasks[spec.task_id] = TaskEntry(spec, owner)
        if owner == 0:
            self.driver_tasks += 1
        if spec.parent is not None and spec.parent in self.tasks:
            self.children.setdefault(spec.parent, set()).add(spec.task_id)
        if placed is not None:
            for oid in spec.arg_refs:
                entry = self.objects.get(oid)
                if entry is not None:
                    entry.pins += 1
            self.func_sent.setdefault(spec.func_id, set()).add(placed)
            self.scheduler.acquire(placed, spec.demand)
            task.state, task.rank = "running", placed
            return
        if spec.actor is not None:
            self._actor_submitted(task)
        self._enter(task)

    def _enter(self, task: TaskEntry) -> None:
        """Pin the task's argument refs and wait for (or run on) its dependencies."""
        spec = task.spec
        task.missing = 0
        for oid in spec.arg_refs:
            entry = self.objects.get(oid)
            if entry is not None:
                entry.pins += 1
        for oid in spec.deps:
            entry = self.objects.get(oid)
            if entry is None:
                continue  # freed or unknown: found missing when the task is made ready
            if entry.state == PENDING:
                task.missing += 1
                if spec.task_id not in entry.waiting_tasks:  # a bounced task re-enters
                    entry.waiting_tasks.append(spec.task_id)
        if task.missing == 0:
            self._make_ready(task)
        else:
            self._try_early(task)

    def _try_early(self, task: TaskEntry) -> None:
        """Send a task whose inputs are all being made on one rank to that rank now, to
        wait there for them (Ray-style pipelining of dependent tasks: no round trip to
        rank 0 between producer and consumer).  No room yet: retried when that rank frees."""
        rank = self._early_rank(task)
        if rank is None:
            return
        if not self.scheduler.nodes[rank].has_room(task.spec.demand):
            self.deferred.setdefault(rank, []).append(task.spec.task_id)
            return
        self._dispatch(task, rank)

    def _early_rank(self, task: TaskEntry) -> int | None:
        """The rank running every producer of the task's pending inputs, if any.

        Only for a few pending inputs: a reduce over many maps (spread over nodes
        anyway) would otherwise be looked at, input by input, each time one of
        its producers is sent out.
        """
        spec = task.spec
        if spec.strategy != "DEFAULT" or task.missing > EARLY_MAX_PENDING or spec.actor is not None:
            return None  # (an actor's calls go to it in order: _pump_actor; creations: strict)
        rank = None
        for oid in spec.deps:
            entry = self.objects.get(oid)
            if entry is None or entry.state == FAILED:
                return None
            if entry.state != PENDING:
                continue
            producer = self.tasks.get(entry.producer) if entry.producer else None
            if (producer is None or producer.state != "running" or producer.cancelled
                    or producer.lease is not None):  # its raylet does not know of it
                return None
            if rank is None:
                rank = producer.rank
            elif rank != producer.rank:
                return None
        node = self.scheduler.nodes.get(rank) if rank is not None else None
        if node is None or not node.alive or not node.fits_ever(spec.demand):
            return None
        return rank

    def fail_submit(self, spec: TaskSpec, failure: Failure) -> None:
        """Record a task refused at submission (e.g. infeasible from a worker)."""
        if spec.method == ACTOR_INIT and spec.actor not in self.actors:  # its calls say why
            self._dead_actor(spec, failure.message)
        for oid in spec.return_ids:
            entry = self.objects[oid] = ObjectEntry(FAILED, ("err", failure), spec.task_id)
            entry.refcount = 1
        self.changed = True

    def _make_ready(self, task: TaskEntry) -> None:
        spec = task.spec
        best, best_size = None, LOCALITY_MIN_BYTES
        for oid in spec.deps:
            entry = self.objects.get(oid)
            if entry is None:
                return self._finish_failed(task, lost_failure(oid, "it was freed or never existed"))
            if entry.state == FAILED:
                return self._finish_failed(task, entry.info[1])
            info = entry.info
            if info[0] == "shm" and info[2] >= best_size:
                best, best_size = info[1], info[2]
        task.state, task.lease = "ready", None
        if spec.method is not None and spec.method != ACTOR_INIT:
            return self._pump_actor(self.actors[spec.actor])
        if self.leases and (self._run_leased(task) or self._return_idle_leases()):
            return
        preferred = (best,) if best is not None else ()
        try:
            rank = self.scheduler.place(spec.demand, spec.strategy, preferred, self._depth(spec),
                                        spec.method == ACTOR_INIT or self._yields(spec))
        except Exception as exc:  # infeasible now (e.g. affinity to a dead node)
            return self._finish_failed(task, Failure("system", None, type(exc).__name__, str(exc),
                                                     "", spec.name, "rank 0"))
        if rank is None:
            task.state = "queued"
            key = self.scheduler.shape(spec.demand, spec.strategy)
            if spec.method == ACTOR_INIT:  # placed strictly: never ahead of tasks it would block
                key = (*key, "actor")
                self._creation_waits(spec)
            self.scheduler.enqueue(key, spec.task_id)
        else:
            self._dispatch(task, rank)

    def _depth(self, spec: TaskSpec) -> int:
        """How much deeper than usual a node's queue of this function's tasks may be.

        A task's run time bounds what a deep queue costs: 16 queued 100 µs tasks
        are 1.6 ms of work, while a round trip to rank 0 for each new one would
        leave the workers idle.  Unknown or long functions keep the usual depth.
        """
        took = self.durations.get(spec.func_id)
        if took is None or took >= SHORT_TASK_SECONDS:
            return 1
        return min(MAX_DEPTH, int(SHORT_TASK_SECONDS / max(took, 1e-6)))

    def _dispatch(self, task: TaskEntry, rank: int) -> None:
        spec = task.spec
        self.scheduler.acquire(rank, spec.demand, spec.method is not None)  # (a creation: calls
        # are sent by _pump_actor)
        task.state, task.rank, task.sent_at = "running", rank, self.seq
        sent = self.func_sent.setdefault(spec.func_id, set())
        func = None
        if rank not in sent:
            sent.add(rank)
            func = self.functions[spec.func_id]
        deps = {}
        for oid in spec.deps:
            entry = self.objects[oid]
            deps[oid] = entry.info if entry.state != PENDING else PENDING_HERE
        self.out.append((rank, (m.TASKS, spec, func, deps)))
        self._maybe_ask_lease(task, rank)
        for oid in spec.return_ids:  # its consumers may now follow it there
            entry = self.objects.get(oid)
            for tid in entry.waiting_tasks if entry is not None else ():
                consumer = self.tasks.get(tid)
                if consumer is not None and consumer.state == "waiting":
                    self._try_early(consumer)

    def _drain_queues(self) -> None:
        sched = self.scheduler
        if self.waiting_creations:  # first: the tasks behind them yield to them
            self._place_waiting_creations()
        for key in sched.ready_keys():
            q = sched.queues[key]
            while q:
                task = self.tasks.get(q[0])
                if task is None or task.state != "queued":
                    q.popleft()
                    continue
                try:
                    rank = sched.place(task.spec.demand, task.spec.strategy, (), self._depth(task.spec),
                                       task.spec.method == ACTOR_INIT or self._yields(task.spec))
                except Exception as exc:
                    q.popleft()
                    self._finish_failed(task, Failure("system", None, type(exc).__name__, str(exc),
                                                      "", task.spec.name, "rank 0"))
                    continue
                if rank is None:
                    break
                q.popleft()
                self._dispatch(task, rank)
            if not q:
                del sched.queues[key]

    def task_done(self, rank: int, task_id: str, results: list, failure: Failure | None,
                  took: float | None = None) -> None:
        if self.leases:
            self._lease_refused(rank, task_id)
        task = self.tasks.get(task_id)
        if task is None or task.rank != rank or task.state != "running":
            return  # stale (cancelled or already retried elsewhere)
        spec = task.spec
        if took is not None:
            self.durations[spec.func_id] = took
        if task.blocked:
            self.scheduler.unblock(rank, spec.demand)
            task.blocked = False
        if task.lease is not None:  # the lease keeps its CPU
            self._lease_task_over(task.lease, task_id)
        elif spec.method is None:
            self.scheduler.release(rank, spec.demand)
        elif spec.method == ACTOR_INIT:
            if failure is None:  # the actor holds them while it lives
                self.scheduler.release(rank, {})
            else:
                self.scheduler.release(rank, spec.demand, held=True)
        # (an actor's calls hold nothing)
        if failure is not None and task.cancelled:
            failure = cancelled_failure(spec)
        if failure is not None and failure.kind == "lostdep" and not task.cancelled:
            if is_method(spec):
                self._requeue_call(task, handed_back=True)
            # an argument's bytes vanished: rebuild it, then run this task again (no retry used)
            for oid in failure.lost:
                entry = self.objects.get(oid)
                if entry is not None and entry.made_at <= task.sent_at:  # not remade since
                    self.object_lost(oid)
            task.state, task.rank = "waiting", None
            self._enter(task)  # pins the arguments again before the old pins go
            for oid in spec.arg_refs:
                self._unpin(oid)
        elif spec.method == ACTOR_INIT:
            self._creation_over(task, results, failure)
        elif failure is not None and failure.kind == "actor" and is_method(spec):
            self._call_refused(task)
        elif failure is not None and failure.kind == "exit" and is_method(spec):
            self.kill_actor(spec.actor, True, failure.message)  # it ended itself
            self._finish_failed(task, self.actors[spec.actor].failure)
        elif failure is not None and failure.retryable and not task.cancelled and (
                spec.max_retries < 0 or spec.attempt < spec.max_retries):
            spec.attempt += 1
            self.stats["retried"] += 1
            task.rank = None
            if is_method(spec):
                self._requeue_call(task)
            self._make_ready(task)
        elif failure is not None:
            self._finish_failed(task, failure)
        else:
            self._finish_ok(task, results)
        for tid in self.deferred.pop(rank, ()):  # consumers that waited for room here
            consumer = self.tasks.get(tid)
            if consumer is not None and consumer.state == "waiting":
                self._try_early(consumer)
        self._drain_queues()

    def _finish_ok(self, task: TaskEntry, results: list) -> None:
        spec = task.spec
        if spec.max_retries != 0 and results:  # keep the spec to rebuild lost results
            self.lineage[spec.task_id] = [spec, len(results)]
        for oid, info, contained in results:
            self._object_ready(oid, info, contained, task.rank)
        self._task_over(task)

    def _finish_failed(self, task: TaskEntry, failure: Failure) -> None:
        if task.spec.method == ACTOR_INIT:  # (an input failed, it was cancelled, ...)
            failure = self._creation_failed(task, failure)
        for oid in task.spec.return_ids:
            self._object_ready(oid, ("err", failure), (), None)
        self._task_over(task)

    def _task_over(self, task: TaskEntry) -> None:
        task.state = "done"
        self.stats["finished"] += 1
        if task.owner == 0:
            self.driver_tasks -= 1
        del self.tasks[task.spec.task_id]
        self.children.pop(task.spec.task_id, None)
        if task.spec.method is not None:
            self._call_over(task)
        for oid in task.spec.arg_refs:
            self._unpin(oid)

    # -- objects -----------------------------------------------------------
    def _object_ready(self, oid: str, info: Any, contained: tuple, rank: int | None) -> None:
        entry = self.objects.get(oid)
        if entry is None:  # every ref was dropped while it was pending
            entry = self.objects[oid] = ObjectEntry(PENDING)
        entry.state = FAILED if info[0] == "err" else READY
        entry.info = info
        self.seq += 1
        entry.made_at = self.seq
        if info[0] == "shm":
            entry.copies.add(info[1])
        entry.contained = tuple(contained)
        for cid in entry.contained:
            c = self.objects.get(cid)
            if c is not None:
                c.pins += 1
        if not self.watch or any(ids is None or oid in ids for ids in self.watch.values()):
            self.changed = True  # (a driver waiting for another object sleeps on)
        self._notify(oid, entry)
        self._maybe_free(oid)

    def put(self, oid: str, info: Any, contained: tuple, owner: int) -> None:
        entry = self.objects[oid] = ObjectEntry(PENDING)
        entry.refcount = 1  # the putter's ObjectRef
        self._object_ready(oid, info, contained, owner)

    def copied(self, oid: str, rank: int) -> None:
        entry = self.objects.get(oid)
        if entry is None:
            self.out.append((rank, (m.FREE, [oid])))
        else:
            entry.copies.add(rank)

    def subscribe(self, rank: int, oids: list[str]) -> None:
        ready = []
        for oid in oids:
            entry = self.objects.get(oid)
            if entry is None:
                ready.append((oid, ("err", lost_failure(oid, "it was freed or never existed"))))
            elif entry.state == PENDING:
                entry.subscribers.add(rank)
            else:
                ready.append((oid, entry.info))
        if ready:
            self.out.append((rank, (m.OBJECTS, ready)))

    def refs(self, changes: list[tuple[str, int]]) -> None:
        for oid, delta in changes:
            entry = self.objects.get(oid)
            if entry is not None:
                entry.refcount += delta
                if delta < 0:
                    self._maybe_free(oid)

    def _unpin(self, oid: str) -> None:
        entry = self.objects.get(oid)
        if entry is not None:
            entry.pins -= 1
            self._maybe_free(oid)

    def _maybe_free(self, oid: str) -> None:
        entry = self.objects.get(oid)
        if entry is None or entry.refcount > 0 or entry.pins > 0 or entry.state == PENDING:
            return
        del self.objects[oid]
        self.stats["freed"] += 1
        held = self.lineage.get(entry.producer) if entry.producer else None
        if held is not None:
            held[1] -= 1
            if held[1] <= 0:
                del self.lineage[entry.producer]
        for rank in entry.copies:
            self.out.append((rank, (m.FREE, [oid])))
        for cid in entry.contained:
            self._unpin(cid)
        if self.actors and entry.producer in self.actors and (
                oid == self.actors[entry.producer].spec.return_ids[0]):
            self._actor_released(entry.producer)

    # -- losses and reconstruction ----------------------------------------
    def object_lost(self, oid: str, rank: int | None = None) -> None:
        """The stored bytes of ``oid`` are gone (at ``rank``, or everywhere if None)."""
        entry = self.objects.get(oid)
        if entry is None or entry.state != READY or entry.info[0] != "shm":
            return
        if rank is not None:
            entry.copies.discard(rank)
            if entry.copies:
                other = min(entry.copies)
                entry.info = ("shm", other, entry.info[2])
                self.changed = True
                return
        entry.copies.clear()
        held = self.lineage.get(entry.producer) if entry.producer else None
        spec = held[0] if held else None
        if spec is None or spec.task_id in self.tasks:
            if spec is None:
                why = ("it was made by put() and cannot be rebuilt" if entry.producer is None else
                       "the task that made it cannot be re-run (max_retries=0 or lineage released)")
            else:
                return  # already being rebuilt
            entry.state, entry.info = FAILED, ("err", lost_failure(oid, why))
            self.changed = True
            self._notify(oid, entry)
            return
        if 0 <= spec.max_retries <= spec.attempt:
            entry.state, entry.info = FAILED, ("err", lost_failure(
                oid, f"rebuilding it would exceed max_retries={spec.max_retries} of task {spec.name}"))
            self.changed = True
            self._notify(oid, entry)
            return
        # re-run the producer: every output becomes pending again
        spec.attempt += 1
        self.stats["rebuilt"] += 1
        for rid in spec.return_ids:
            e = self.objects.get(rid)
            if e is not None and e.state != PENDING:
                for cid in e.contained:
                    self._unpin(cid)
                e.contained = ()
                e.state, e.info = PENDING, None
                for r in e.copies:
                    self.out.append((r, (m.FREE, [rid])))
                e.copies.clear()
        del self.lineage[spec.task_id]
        task = self.tasks[spec.task_id] = TaskEntry(spec, 0)
        task.rebuild = True
        self.driver_tasks += 1
        self._enter(task)

    def _notify(self, oid: str, entry: ObjectEntry) -> None:
        for r in entry.subscribers:
            self.out.append((r, (m.OBJECTS, [(oid, entry.info)])))
        entry.subscribers.clear()
        waiting, entry.waiting_tasks = entry.waiting_tasks, []
        for tid in waiting:
            task = self.tasks.get(tid)
            if task is not None and task.state == "waiting":
                task.missing -= 1
                if task.missing == 0:
                    self._make_ready(task)

    # -- cancellation ------------------------------------------------------
    def cancel(self, task_id: str, force: bool, recursive: bool) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return  # finished already: its result stands
        if recursive:
            for child in list(self.children.get(task_id, ())):
                entry = self.tasks.get(child)  # (never force an actor's call: it kills the actor)
                self.cancel(child, force and (entry is None or not is_method(entry.spec)), recursive)
        task.cancelled = True
        if task.state == "running" and task.lease is not None:
            self._cancel_leased(task, force)
        elif task.state == "running":
            self.out.append((task.rank, (m.CANCEL, task_id, force)))
        else:
            self._finish_failed(task, cancelled_failure(task.spec))

    # -- blocking in get ---------------------------------------------------
    def blocked(self, rank: int, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None and task.rank == rank and not task.blocked and not is_method(task.spec):
            task.blocked = True
            self.scheduler.block(rank, task.spec.demand)
            self._drain_queues()

    def unblocked(self, rank: int, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task is not None and task.rank == rank and task.blocked:
            task.blocked = False
            self.scheduler.unblock(rank, task.spec.demand)

    # -- invariants (tests) ------------------------------------------------
    def validate(self) -> None:
        for oid, e in self.objects.items():
            assert e.refcount >= 0, (oid, e.refcount)
            assert e.pins >= 0, (oid, e.pins)
            assert e.state in (PENDING, READY, FAILED)
            assert (e.state == PENDING) == (e.info is None), (oid, e.state, e.info)
            if e.state != PENDING:
                assert e.refcount > 0 or e.pins > 0, f"{oid} should have been freed"
        for tid, t in self.tasks.items():
            assert t.state in ("waiting", "ready", "queued", "running"), (tid, t.state)
            if t.state == "waiting":
                pending = sum(1 for d in t.spec.deps
                              if d in self.objects and self.objects[d].state == PENDING)
                assert pending == t.missing, (tid, pending, t.missing)
        for node in self.scheduler.nodes.values():
            assert node.ntasks >= 0, (node.rank, node.ntasks)
            assert all(v >= 0 for v in node.load.values()), (node.rank, node.load)


class _Watching:
    """``GCS.watching``: a plain class, not a generator: it is on every get()'s path."""
    __slots__ = ("watch", "ids", "me")

    def __init__(self, watch: dict, ids: set | None):
        self.watch, self.ids, self.me = watch, ids, 0

    def __enter__(self) -> int:
        self.me = threading.get_ident()
        self.watch[self.me] = self.ids
        return self.me

    def __exit__(self, *exc: Any) -> None:
        self.watch.pop(self.me, None)
