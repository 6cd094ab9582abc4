"""The GCS's actor table (a mixin of ``GCS``): creation, ordered calls, death, restarts.

An actor is a worker process that keeps an instance of a class between calls.
Its *creation task* (``TaskSpec.method == ACTOR_INIT``, task id = actor id) is
placed like any task; when its raylet reports it done, the worker belongs to
the actor, which keeps the creation's resources until it dies.  Method calls
(``m.is_method``) hold no resources and run one at a time, in the order they
were submitted: rank 0 sends each to the actor's raylet once its inputs exist
and every call before it was sent (a call waiting for an input holds up the
ones behind it, as in Ray), and the raylet runs them in arrival order.

::

    creating ──(creation done)──> alive ──(worker died, restarts left)──> restarting
       │                            │                                        │
       │   (constructor raised, no restart left, kill(), handles gone)       │
       └────────────────────────────┴──────────────> dead <──────────────────┘

A dying actor's worker is reported by its raylet (``ACTOR_DIED``) with the
call it was running and the calls it had not started: on a restart those
queue again at the head (the running one only while ``max_task_retries``
allows), otherwise they fail with ``ActorDiedError``.  The actor lives while
its creation object does: every ``ActorHandle`` holds a ref to it and every
pending call pins it, so when the last handle is gone (and a named actor's
name is released by ``kill``) the actor ends.  Pure state: no IO.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import Any

from .._protocol import messages as m
from .._protocol.messages import ACTOR_INIT, Failure, TaskSpec

PENDING_STATE = "pending"  # (gcs.PENDING)


def cancelled_failure(spec: TaskSpec) -> Failure:
    return Failure("cancelled", None, "TaskCancelledError",
                   f"task {spec.name} ({spec.task_id}) was cancelled", "", spec.task_id, "")

CREATING, ALIVE, RESTARTING, DEAD = "creating", "alive", "restarting", "dead"


class ActorEntry:
    __slots__ = ("actor_id", "state", "rank", "spec", "order", "name", "failure", "restarts",
                 "class_name", "methods", "max_restarts", "max_task_retries", "held", "pinned",
                 "calls", "seq", "inflight", "epoch")

    def __init__(self, spec: TaskSpec):
        class_name, methods, name, max_restarts, max_task_retries = spec.actor_opts[:5]
        self.actor_id = spec.actor
        self.spec = spec
        self.state = CREATING
        self.rank: int | None = None
        self.order: deque[str] = deque()  # calls not sent yet, in submission order
        self.name = name
        self.failure: Failure | None = None
        self.restarts = 0
        self.class_name, self.methods = class_name, methods
        self.max_restarts, self.max_task_retries = max_restarts, max_task_retries
        self.held = False  # its raylet holds the creation's resources for it
        self.pinned = False  # its creation's argument refs are kept for a restart
        self.calls = 0  # calls submitted so far
        self.seq: dict[str, int] = {}  # call id -> its place in submission order (while not over)
        self.inflight: set[str] = set()  # calls sent to its raylet and not over
        # sent with each call; raised when a call its raylet handed back (a lost input) goes
        # back into ``order``: the raylet refuses calls sent before that (they would pass it)
        self.epoch = 0

    def requeue(self, task_ids: list) -> None:
        """Put calls back into ``order``, every call in submission order (calls over are
        dropped: ``order`` lets them go only at its head)."""
        seq = self.seq
        self.order = deque(sorted((t for t in set(self.order).union(task_ids) if t in seq),
                                  key=seq.__getitem__))
        self.inflight.difference_update(task_ids)

    def describe(self) -> str:
        return f"actor {self.class_name} ({self.actor_id}" + (f", name {self.name!r})" if self.name else ")")


def actor_failure(actor: ActorEntry, why: str) -> Failure:
    return Failure("actor", None, "ActorDiedError", f"{actor.describe()} is dead: {why}", "",
                   actor.class_name, "")


class ActorTable:
    """Mixin of ``GCS``: see the module docstring."""

    def _init_actors(self) -> None:
        self.actors: dict[str, ActorEntry] = {}
        self.actor_names: dict[str, str] = {}
        # creations waiting for free capacity -> the resources they need: meanwhile tasks
        # that need any of those are placed only where there is free capacity too, so a
        # node's queue drains and a stream of tasks cannot keep an actor from ever starting
        self.waiting_creations: dict[str, tuple] = {}

    def _creation_waits(self, spec: TaskSpec) -> None:
        self.waiting_creations[spec.task_id] = tuple(spec.demand) or ("_tasks",)

    def _place_waiting_creations(self) -> None:
        """Creations waiting for free capacity go first when some frees up."""
        for tid in list(self.waiting_creations):
            task = self.tasks.get(tid)
            if task is None or task.state != "queued":
                del self.waiting_creations[tid]
                continue
            spec = task.spec
            try:
                rank = self.scheduler.place(spec.demand, spec.strategy, (), 1, True)
            except Exception as exc:  # infeasible now (e.g. affinity to a dead node)
                del self.waiting_creations[tid]
                self._finish_failed(task, Failure("system", None, type(exc).__name__, str(exc),
                                                  "", spec.name, "rank 0"))
                continue
            if rank is not None:
                del self.waiting_creations[tid]
                self._dispatch(task, rank)  # (its queue entry is skipped: no longer queued)

    def _yields(self, spec: TaskSpec) -> bool:
        """Whether a task must not be pipelined (it would compete with a waiting creation)."""
        waiting = self.waiting_creations
        if not waiting:
            return False
        for tid in [t for t in waiting if self.tasks.get(t) is None or self.tasks[t].state != "queued"]:
            del waiting[tid]  # placed, or over
        demand = spec.demand
        return any(k in demand or k == "_tasks" for keys in waiting.values() for k in keys)

    # -- creation -----------------------------------------------------------
    def _check_actor_name(self, spec: TaskSpec) -> bool:
        """Raise if the creation's name is in use; True if it asked for that actor instead
        (``get_if_exists``): then ``_alias_actor`` answers it, with no new actor."""
        name = spec.actor_opts[2] if spec.method == ACTOR_INIT else ""
        if name and name in self.actor_names:
            if len(spec.actor_opts) > 5 and spec.actor_opts[5]:
                return True
            raise ValueError(f"an actor named {name!r} already exists; pick another name, "
                             f"get it with mpiray.get_actor({name!r}), or pass get_if_exists=True")
        return False

    def _alias_actor(self, spec: TaskSpec) -> None:
        """``get_if_exists``, settled here at once (two tasks asking together get one actor):
        the new actor id names the live actor of that name; its creation object is ready."""
        from .._serialization import dumps

        self.actors[spec.actor] = self.actors[self.actor_names[spec.actor_opts[2]]]
        self.put(spec.return_ids[0], ("inline", dumps(None).inline()), (), -1)
        self.changed = True

    def _actor_submitted(self, task: Any) -> None:
        """Record a creation task (a new actor) or queue a call behind the actor's others."""
        spec = task.spec
        if spec.method == ACTOR_INIT:
            actor = self.actors[spec.actor] = ActorEntry(spec)
            if actor.name:  # a named actor lives until kill(), handles or not
                self.actor_names[actor.name] = actor.actor_id
                self.objects[spec.return_ids[0]].refcount += 1
            return
        actor = self.actors.get(spec.actor)
        if actor is None:  # e.g. a handle whose creation was refused: its calls fail
            actor = self._dead_actor(dataclasses.replace(spec, actor_opts=("?", {}, "", 0, 0)),
                                     "it was never created")
        spec.actor = actor.actor_id  # (an alias from get_if_exists names the actor itself)
        actor.seq[spec.task_id] = actor.calls
        actor.calls += 1
        actor.order.append(spec.task_id)

    def _dead_actor(self, spec: TaskSpec, why: str) -> ActorEntry:
        """An entry for an actor that never lived (refused, or unknown): its calls say why."""
        actor = self.actors[spec.actor] = ActorEntry(spec)
        actor.state, actor.failure = DEAD, actor_failure(actor, why)
        return actor

    def _creation_over(self, task: Any, results: list, failure: Failure | None) -> None:
        """The creation task ended on ``task.rank``: the actor is alive, restarts, or is dead."""
        actor = self.actors[task.spec.actor]
        if failure is None:
            actor.rank, actor.held = task.rank, True
            if actor.max_restarts and not actor.pinned and actor.state != DEAD:  # a restart runs it again with them
                actor.pinned = True
                for oid in task.spec.arg_refs:
                    entry = self.objects.get(oid)
                    if entry is not None:
                        entry.pins += 1
            self._finish_ok(task, results)
            if actor.state == DEAD:  # killed while it was being made
                self.out.append((actor.rank, (m.KILL_ACTOR, actor.actor_id)))
            else:
                actor.state = ALIVE
                self._pump_actor(actor)
            return
        if actor.state != DEAD and failure.kind == "crash" and self._may_restart(actor):
            actor.restarts += 1
            task.spec.attempt += 1
            self.stats["retried"] += 1
            task.rank = None
            self._make_ready(task)
            return
        self._finish_failed(task, failure)  # (_creation_failed: the actor is dead)

    def _creation_failed(self, task: Any, failure: Failure) -> Failure:
        """A creation task ends failed, however it came to fail: the actor is dead."""
        actor = self.actors[task.spec.actor]
        if actor.state != DEAD:
            if failure.kind == "error" and failure.function != task.spec.name:
                why = (f"an argument of its constructor failed: task {failure.function} raised "
                       f"{failure.type_name}: {failure.message}")
            elif failure.kind == "error":
                why = (f"its constructor raised {failure.type_name}: {failure.message}\n"
                       f"{failure.traceback}")
            elif failure.kind == "cancelled":
                why = "its creation was cancelled"
            else:
                why = f"its creation failed: {failure.type_name}: {failure.message}"
            self._actor_dead(actor, actor_failure(actor, why))
        return actor.failure

    def _may_restart(self, actor: ActorEntry) -> bool:
        return actor.max_restarts < 0 or actor.restarts < actor.max_restarts

    # -- calls --------------------------------------------------------------
    def _pump_actor(self, actor: ActorEntry) -> None:
        """Send the actor's raylet its calls that are ready, in order, up to the first that
        still waits for an input; a dead actor fails them all."""
        order = actor.order
        while order:
            task = self.tasks.get(order[0])
            if task is None or task.state in ("running", "done"):
                order.popleft()  # finished early (cancelled, an input failed)
                continue
            if actor.state == DEAD:
                order.popleft()
                self._finish_failed(task, actor.failure)
                continue
            if actor.state != ALIVE or task.state != "ready":
                return
            spec = task.spec
            deps, missing = {}, 0
            for oid in spec.deps:  # (an input may have been lost and be rebuilt meanwhile)
                entry = self.objects[oid]
                if entry.state == PENDING_STATE:
                    missing += 1
                    entry.waiting_tasks.append(spec.task_id)
                deps[oid] = entry.info
            if missing:  # it waits again, at the head; _make_ready pumps when it is ready
                task.state, task.missing = "waiting", missing
                return
            order.popleft()
            task.state, task.rank, task.sent_at = "running", actor.rank, self.seq
            actor.inflight.add(spec.task_id)
            self.out.append((actor.rank, (m.TASKS, spec, None, deps, actor.epoch)))

    def _call_over(self, task: Any) -> None:
        spec = task.spec
        actor = self.actors.get(spec.actor) if spec.method != ACTOR_INIT else None
        if actor is None:
            return
        actor.seq.pop(spec.task_id, None)
        if spec.task_id in actor.inflight:
            actor.inflight.discard(spec.task_id)
        elif actor.state == ALIVE:  # it ended in ``order`` (an input failed, cancelled): the
            self._pump_actor(actor)  # calls behind it may go now

    def _requeue_call(self, task: Any, handed_back: bool = False) -> None:
        """A call goes back into its actor's queue, in its place (a retry; a lost input,
        ``handed_back`` by its raylet: calls sent after it must not pass it there)."""
        actor = self.actors.get(task.spec.actor)
        if actor is not None:
            actor.requeue([task.spec.task_id])
            if handed_back:
                actor.epoch += 1

    def _call_refused(self, task: Any) -> None:
        """The raylet had no such actor when the call arrived (it died meanwhile), or handed
        back the calls behind one whose input was lost: the call never ran, so it waits in
        its place (for a restart), or fails with the actor's death."""
        actor = self.actors[task.spec.actor]
        if actor.state == DEAD:
            self._finish_failed(task, actor.failure)
        elif task.cancelled:
            self._finish_failed(task, cancelled_failure(task.spec))
        else:
            task.state, task.rank = "ready", None
            actor.requeue([task.spec.task_id])
            actor.epoch += 1
            self._pump_actor(actor)

    # -- death ---------------------------------------------------------------
    def actor_died(self, rank: int, actor_id: str, why: str, running: str | None,
                   unstarted: list[str]) -> None:
        """The actor's worker on ``rank`` is gone (``ACTOR_DIED``)."""
        actor = self.actors.get(actor_id)
        if actor is None or actor.rank != rank or not actor.held:
            return
        actor.held = False
        self.scheduler.release(rank, actor.spec.demand, task=False, held=True)
        self._drain_queues()  # tasks waiting for what it held
        # every call sent there and not over: those it ran or held, and those on their way
        # (the raylet refuses them; their refusals come after this and are stale by then)
        calls = [self.tasks[tid] for tid in sorted(actor.inflight, key=actor.seq.__getitem__)]
        calls = [t for t in calls if t.state == "running" and t.rank == rank]
        if actor.state != DEAD and self._may_restart(actor):
            actor.restarts += 1
            actor.state = RESTARTING
            again = []
            for task in calls:
                spec = task.spec
                if task.cancelled:
                    self._finish_failed(task, cancelled_failure(spec))
                    continue
                if spec.task_id == running:  # it was interrupted: run it again only if allowed
                    if not (actor.max_task_retries < 0 or spec.attempt < actor.max_task_retries):
                        self._finish_failed(task, actor_failure(
                            actor, f"{why}, while it ran this call (max_task_retries="
                                   f"{actor.max_task_retries}); the actor restarts"))
                        continue
                    spec.attempt += 1
                task.state, task.rank = "ready", None
                again.append(spec.task_id)
            actor.requeue(again)
            self._restart(actor)
            return
        if actor.state != DEAD:
            self._actor_dead(actor, actor_failure(actor, why))
        for task in calls:
            self._finish_failed(task, actor.failure)

    def _restart(self, actor: ActorEntry) -> None:
        """Run the creation task again (it makes no object this time)."""
        from .gcs import TaskEntry

        spec = dataclasses.replace(actor.spec, return_ids=(), attempt=actor.restarts)
        task = self.tasks[spec.task_id] = TaskEntry(spec, -1)
        self.stats["retried"] += 1
        self._enter(task)

    def _actor_dead(self, actor: ActorEntry, failure: Failure) -> None:
        """The actor will never run again: fail its queued calls, free its name."""
        actor.state, actor.failure = DEAD, failure
        if actor.pinned:
            actor.pinned = False
            for oid in actor.spec.arg_refs:
                self._unpin(oid)
        name_ref = actor.spec.return_ids[0] if actor.spec.return_ids else None
        actor.spec = dataclasses.replace(actor.spec, args=None)  # (its entry stays: it says why)
        if actor.name and self.actor_names.get(actor.name) == actor.actor_id:
            del self.actor_names[actor.name]
            self.refs([(name_ref, -1)])  # (may end in _actor_released: dead)
        self._pump_actor(actor)

    def kill_actor(self, actor_id: str, no_restart: bool = True,
                   why: str = "it was killed with mpiray.kill()") -> None:
        actor = self.actors.get(actor_id)
        if actor is None or actor.state == DEAD:
            return
        if not no_restart and self._may_restart(actor):
            if actor.state == ALIVE:  # (else it is being made already)
                self.out.append((actor.rank, (m.KILL_ACTOR, actor_id)))  # ACTOR_DIED restarts it
            return
        was_alive = actor.state == ALIVE or actor.held
        self._actor_dead(actor, actor_failure(actor, why))
        if was_alive:
            self.out.append((actor.rank, (m.KILL_ACTOR, actor_id)))
        creation = self.tasks.get(actor_id)
        if creation is not None:  # being made (or remade): stop that
            self.cancel(actor_id, True, False)

    def _actor_released(self, actor_id: str) -> None:
        """The actor's creation object was freed: no handle and no pending call is left."""
        actor = self.actors.get(actor_id)
        if actor is not None and actor.state != DEAD:
            self.kill_actor(actor_id, True, "every handle to it was dropped (an actor lives while "
                                            "a handle to it does; name it to keep it)")

    def lookup_actor(self, name: str) -> tuple | None:
        """(actor id, class name, methods, class id, creation object id) of a live named actor."""
        actor = self.actors.get(self.actor_names.get(name, ""))
        if actor is None or actor.state == DEAD:
            return None
        spec = actor.spec
        return actor.actor_id, actor.class_name, actor.methods, spec.func_id, spec.return_ids[0]
