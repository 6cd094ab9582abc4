"""A raylet's actors (a mixin of ``Raylet``): each is one worker that keeps its instance.

The creation task runs like any task, on a worker taken from the pool with the
actor's resources; when it succeeds the worker leaves the pool for good and
the resources stay held (``RayletActor``).  Calls (``m.is_method``) hold
nothing: each joins its actor's FIFO when it arrives (rank 0 sends them in
submission order), goes through the usual queue while its inputs arrive, and
runs when it is at the head of the FIFO and the worker is free
(``_pump_actors``).  When the worker dies, the raylet frees the resources and
reports the call it ran and those it had not started (``ACTOR_DIED``): rank 0
restarts the actor or fails them.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from .._protocol import messages as m
from .._protocol.messages import ACTOR_INIT, Failure
from .local import LocalTask


class RayletActor:
    __slots__ = ("worker", "creation", "fifo", "floor")

    def __init__(self, worker: Any, creation: LocalTask):
        self.worker = worker
        self.creation = creation  # its resources and GPUs are the actor's
        self.fifo: deque[LocalTask] = deque()  # calls that arrived and did not start
        # calls sent with an epoch below this are refused: rank 0 sent them before it knew
        # of a call handed back here (a lost input), which they must not pass
        self.floor = 0


class RayletActors:
    def _init_actors(self) -> None:
        self.actors: dict[str, RayletActor] = {}
        self.actor_kick: set[str] = set()  # actors whose next call may start now
        self.lookups: dict[int, tuple] = {}  # token -> (worker, request id) of a get_actor
        self.lookup_seq = 0

    def _call_arrived(self, task: LocalTask, epoch: int) -> bool:
        """Queue a call behind its actor's others; False (and refused) if the actor is not
        here (it died and rank 0 does not know yet), or if the call was sent before rank 0
        knew of a call handed back here (``floor``)."""
        actor = self.actors.get(task.spec.actor)
        if actor is None:
            self._refuse_call(task, f"its actor is not on rank {self.rank}")
            return False
        if epoch < actor.floor:
            self._refuse_call(task, "sent before a call ahead of it was handed back")
            return False
        task.epoch = epoch
        actor.fifo.append(task)
        return True

    def _pump_actors(self, sent: list) -> None:
        """Start the next call of each actor marked in ``actor_kick`` if it may start."""
        kick, self.actor_kick = self.actor_kick, set()
        for aid in kick:
            actor = self.actors.get(aid)
            if actor is None or actor.worker.task is not None:
                continue
            fifo = actor.fifo
            while fifo:
                task = fifo[0]
                if self.waiting.get(task.spec.task_id) is not task:
                    fifo.popleft()  # cancelled before it started
                    continue
                if task.missing:
                    break  # its inputs are on their way; the calls behind it wait
                fifo.popleft()
                w = actor.worker
                task.gpus = actor.creation.gpus
                w.task = task
                self._send_run(w, task)
                if w not in sent:
                    sent.append(w)
                break

    def _actor_task_done(self, w: Any, task: LocalTask, failure: Failure | None) -> None:
        """A creation or call ended on ``w`` (after the usual bookkeeping of W_DONE)."""
        spec = task.spec
        if spec.method == ACTOR_INIT:
            if failure is None:  # the worker is the actor's now, with the task's resources
                self.actors[spec.actor] = RayletActor(w, task)
                w.actor, w.task = spec.actor, None
                self.actor_kick.add(spec.actor)
            else:  # (its half-made state must not serve anyone)
                self._release(task, blocked=False)
                self._drop_worker_refs(w)
                self.pool.stop_worker(w)
            return
        w.task = None
        self.actor_kick.add(spec.actor)

    def _actor_task_failed(self, task: LocalTask, failure: Failure) -> None:
        """After a call's DONE went out: if its input was lost, it runs again once rebuilt,
        and no call may pass it meanwhile."""
        if failure.kind == "lostdep" and task.spec.method != ACTOR_INIT:
            self._hand_back_calls(self.actors.get(task.spec.actor), task.epoch)

    def _hand_back_calls(self, actor: RayletActor | None, epoch: int,
                         after: LocalTask | None = None) -> None:
        """Refuse the calls waiting in the actor's FIFO (behind ``after``, if given), and
        those still on their way (sent in ``epoch`` or before): rank 0 queues them again
        in their order, behind a call that must be sent again."""
        if actor is None:
            return
        actor.floor = max(actor.floor, epoch + 1)
        fifo = actor.fifo
        behind = list(fifo)
        if after is not None:
            if after not in behind:
                return
            cut = behind.index(after)
            fifo.clear()
            fifo.extend(behind[:cut])  # (those before it still run first)
            behind = behind[cut + 1:]
        else:
            fifo.clear()
        for task in behind:
            if self.waiting.get(task.spec.task_id) is task:
                del self.waiting[task.spec.task_id]
                self._refuse_call(task, "handed back behind a call whose input was lost")

    def _refuse_call(self, task: LocalTask, why: str) -> None:
        spec = task.spec
        failure = Failure("actor", None, "ActorDiedError", f"call {spec.name}: {why}", "",
                          spec.name, f"rank {self.rank}")
        self.t.send(0, (m.DONE, spec.task_id, [], failure))
        self._made_nothing(spec)

    def _note_refs(self, w: Any, changes: Any) -> None:
        """Count the refs an actor's worker holds, to let them go if it dies."""
        held = w.refs
        for oid, delta in changes:
            n = held.get(oid, 0) + delta
            if n > 0:
                held[oid] = n
            else:  # (a release of a ref taken before it was an actor's: not its to give back)
                held.pop(oid, None)

    def _drop_worker_refs(self, w: Any) -> None:
        """An actor's worker is gone: the refs it held (handles of other actors, refs kept in
        its state, its puts and calls) are held no more."""
        held, w.refs = w.refs, None
        drops = [(oid, -n) for oid, n in (held or {}).items() if n > 0]
        if drops:
            self.t.send(0, (m.REFS, drops))

    def _actor_worker_died(self, w: Any, why: str) -> None:
        """The worker of an actor is gone: free its resources and tell rank 0 which calls
        it ran or held (they get no DONE)."""
        actor = self.actors.pop(w.actor, None)
        if w.get_req is not None:
            w.get_req.stale = True
        self._drop_worker_refs(w)
        if actor is None:
            return
        self._release(actor.creation, blocked=False)
        running = None
        if w.task is not None:
            running = w.task.spec.task_id
            self.waiting.pop(running, None)
            if running in self.interrupted:
                self._interrupt_over(running)
            self._made_nothing(w.task.spec)
        unstarted = []
        for task in actor.fifo:
            if self.waiting.get(task.spec.task_id) is task:
                del self.waiting[task.spec.task_id]
                unstarted.append(task.spec.task_id)
                self._made_nothing(task.spec)
        where = f"rank {self.rank} on host {self.hosts[self.rank]}, pid {w.pid}"
        self.t.send(0, (m.ACTOR_DIED, w.actor, f"its worker ({where}) died: {why}", running, unstarted))

    def _lookup(self, w: Any, rid: int, name: str) -> None:
        """A task calls get_actor(name): rank 0 knows the names."""
        self.lookup_seq += 1
        self.lookups[self.lookup_seq] = (w, rid)
        self.t.send(0, (m.LOOKUP, self.lookup_seq, name))

    def on_found(self, src: int, token: int, found: Any) -> None:
        w, rid = self.lookups.pop(token, (None, 0))
        if w is not None and self.pool.alive(w):
            w.conn.send((m.W_OBJECTS, rid, [("actor", found)]))

    def on_kill_actor(self, src: int, actor_id: str) -> None:
        actor = self.actors.get(actor_id)
        if actor is not None:
            actor.worker.proc.kill()  # reported by _actor_worker_died when its socket closes
