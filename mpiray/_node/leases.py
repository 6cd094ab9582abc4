"""The raylet's side of worker leases (the protocol: mpiray/_control/lease.py).

A raylet lends rank 0 the worker of a task rank 0 asked about (LEASE) when
that task is done and the node has nothing waiting; the worker then takes
tasks from rank 0 over its own socket.  The raylet keeps the worker's CPU
accounted, learns of a leased task only when it talks to the raylet
(W_LEASE_TASK), and reports the worker's death (LEASE_LOST) or its return
(W_UNLEASED).  A mixin of ``Raylet``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .._options import UNIT
from .._protocol import messages as m
from .local import LocalTask

LEASE_CPU = UNIT  # a lease holds one CPU


class RayletLeases:
    def on_lease(self, src: int, task_id: str, lease_id: str) -> None:
        task = self.waiting.get(task_id)
        if task is not None:
            task.lease = lease_id  # decided when it is done; a DONE without LEASED says no

    def _lend(self, w: Any, task: LocalTask, failure: Any) -> bool:
        """Lend ``w`` and the CPU of ``task`` to rank 0, if this node can spare them now."""
        if (failure is not None or self.queue or self.pulls or self.dep_waiters
                or task.cancel is not None or task.gpus
                or task.spec.demand != {"CPU": LEASE_CPU} or not self.pool.alive(w)):
            return False
        w.leased, w.task = task.lease, None
        self.t.send(0, (m.LEASED, task.lease, w.pid))  # before the task's DONE
        try:
            w.conn.send((m.W_LEASE, task.lease, m.lease_address(self.session)))
        except OSError:
            pass  # it died: _worker_died reports the lease lost
        return True

    def _leased_done(self, w: Any, msg: tuple) -> None:
        """A leased task that made nested calls answers through here (in order with them)."""
        _, task_id, results, failure = msg
        task, w.task = w.task, None
        self.waiting.pop(task_id, None)
        if w.get_req is not None:
            w.get_req.stale = True
            w.get_req = None
        if w.blocked:  # the lease keeps its CPU
            self.avail["CPU"] = self.avail.get("CPU", 0) - LEASE_CPU
            w.blocked = False
        self.t.send(0, (m.DONE, task_id, results, failure, None))
        for oid, info, _contained in results:
            self._made_here(oid, info)
        if failure is not None and task is not None:
            self._made_nothing(task.spec)

    def _unleased(self, w: Any) -> None:
        """The lease ended: the worker and its CPU are this raylet's again (rank 0 forgot a
        lease it returned; one the worker left on its own ends there)."""
        self.t.send(0, (m.LEASE_LOST, w.leased, "it left the lease", f"rank {self.rank}"))
        w.leased = None
        self.avail["CPU"] = self.avail.get("CPU", 0) + LEASE_CPU
        self.pool.give_back(w)

    def _lease_task(self, w: Any, spec: m.TaskSpec) -> None:
        """A leased task makes nested calls: account for it here like any running task."""
        task = w.task = LocalTask(spec, {})
        task.worker, task.started = w, time.monotonic()
        self.waiting[spec.task_id] = task

    def _made_by_lease(self, items: list) -> None:
        """Stored results of a leased task (its DONE went to rank 0 directly, so a FREE of
        them may have come first: then the file is gone and nothing is noted)."""
        for oid, info in items:
            if os.path.exists(self.store.path(oid)):
                self._made_here(oid, info)

    def _leased_worker_died(self, w: Any, why: str) -> None:
        """Rank 0 retries or fails what ran there."""
        task = w.task
        if w.get_req is not None:
            w.get_req.stale = True
        if task is not None:
            self.waiting.pop(task.spec.task_id, None)
            self._made_nothing(task.spec)
        if not w.blocked:
            self.avail["CPU"] = self.avail.get("CPU", 0) + LEASE_CPU
        where = f"rank {self.rank} on host {self.hosts[self.rank]}, worker pid {w.pid}"
        self.t.send(0, (m.LEASE_LOST, w.leased, why, where))
