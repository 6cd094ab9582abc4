"""Worker leases: the driver's direct line to one worker, for round trips without hops.

A task goes driver -> rank 0's service -> MPI -> raylet -> worker -> raylet ->
MPI -> service -> driver: every hop costs tens of microseconds of Python and
wake-ups.  When the driver has only one task in flight (a ``get(f.remote())``
loop) the hops are the whole cost.  So, like Ray's owners, the driver leases a
worker of a raylet on its own host and talks to it over a Unix socket:

    1. the driver's only task in flight, a plain one (default resources, no
       ObjectRef in its arguments), goes out as usual, with LEASE: "when it is
       done, lend me its worker";
    2. the raylet keeps the worker and its CPU, says LEASED (before DONE), and
       tells the worker (W_LEASE), which connects to rank 0's lease socket;
    3. while the driver again has only that one task in flight, the task goes
       straight to the leased worker (W_RUN) and its W_DONE comes straight back;
       a task that sent anything to its raylet (nested calls, puts) answers
       through the raylet instead, so rank 0 sees its messages in order;
    4. a lease idle for ``LEASE_IDLE`` seconds goes back (W_UNLEASE; the worker
       tells its raylet, which frees the CPU); a leased worker that dies is
       reported by its raylet (LEASE_LOST) and its task is retried like any.

This mixin keeps the lease table of the GCS: a pure state machine like the
rest of it (the sockets are in ``lease_io.py``).  A lease holds its CPU in the
global scheduler from LEASED until it is returned or lost.
"""

from __future__ import annotations

from typing import Any

from .._options import UNIT
from .._protocol import messages as m
from .._protocol.messages import Failure, TaskSpec

LEASE_DEMAND = {"CPU": UNIT}
MAX_LEASES = 1  # one is enough for a driver with one task in flight


class Lease:
    __slots__ = ("lease_id", "rank", "asked_with", "state", "granted", "connected", "task_id", "pid",
                 "funcs")

    def __init__(self, lease_id: str, rank: int, asked_with: str):
        self.lease_id = lease_id
        self.rank = rank
        self.asked_with = asked_with  # the task whose worker it will be
        # "granting" until both LEASED (MPI, from the raylet) and the worker's connection
        # (its socket) arrived, in either order; then "ready" <-> "busy"; "broken" once its
        # connection closed, until LEASE_LOST
        self.state = "granting"
        self.granted = self.connected = False
        self.task_id: str | None = None
        self.pid = 0
        self.funcs: set[str] = set()  # functions this worker has been sent


class LeaseMixin:
    """Lease bookkeeping of the GCS (see the module docstring)."""

    def _init_leases(self) -> None:
        self.leases: dict[str, Lease] = {}
        self.lease_host: str | None = None  # the driver's host; None: leasing is off
        self.driver_tasks = 0  # the driver's tasks not finished yet
        self._lease_seq = 0

    def _leasable(self, task: Any) -> bool:
        spec: TaskSpec = task.spec
        # (not a rebuild: the FREE of its old results goes by MPI and the task by the lease
        # socket, so the new results could be written before the old files are deleted)
        return (self.lease_host is not None and task.owner == 0 and self.driver_tasks == 1
                and not task.rebuild and spec.parent is None and not spec.deps and not spec.arg_refs
                and spec.strategy == "DEFAULT" and spec.demand == LEASE_DEMAND and spec.actor is None)

    def _run_leased(self, task: Any) -> bool:
        """Send ``task`` to a ready leased worker; False if there is none."""
        if not self.leases or not self._leasable(task):
            return False
        lease = next((x for x in self.leases.values() if x.state == "ready"), None)
        if lease is None:
            return False
        spec = task.spec
        task.state, task.rank, task.sent_at, task.lease = "running", lease.rank, self.seq, lease.lease_id
        lease.state, lease.task_id = "busy", spec.task_id
        self.stats["leased"] = self.stats.get("leased", 0) + 1
        func = None
        if spec.func_id not in lease.funcs:
            lease.funcs.add(spec.func_id)
            func = self.functions[spec.func_id]
        self.out.append((("lease", lease.lease_id), (m.W_RUN, spec, func, {}, ())))
        return True

    def _maybe_ask_lease(self, task: Any, rank: int) -> None:
        """Ask ``rank`` to lend the worker of ``task`` once it is done (see step 1)."""
        if (len(self.leases) >= MAX_LEASES or rank == 0 or not self._leasable(task)
                or self.nodes.get(rank, {}).get("host") != self.lease_host):
            return
        self._lease_seq += 1
        lease = Lease(f"L{self._lease_seq}", rank, task.spec.task_id)
        self.leases[lease.lease_id] = lease
        self.out.append((rank, (m.LEASE, task.spec.task_id, lease.lease_id)))

    def lease_granted(self, rank: int, lease_id: str, pid: int) -> None:
        lease = self.leases.get(lease_id)
        if lease is None or lease.rank != rank or lease.granted:
            return
        lease.granted, lease.pid = True, pid
        self.scheduler.acquire(rank, LEASE_DEMAND)
        if lease.connected and lease.state == "granting":
            lease.state = "ready"

    def _lease_refused(self, rank: int, task_id: str) -> None:
        """The task a lease was asked with is done: a lease not granted by now never will be
        (the raylet sends LEASED before that DONE)."""
        for lease in list(self.leases.values()):
            if lease.asked_with == task_id and lease.rank == rank and not lease.granted:
                del self.leases[lease.lease_id]

    def lease_connected(self, lease_id: str) -> bool:
        """The leased worker connected; False if the lease is unknown (then close it)."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.connected:
            return False
        lease.connected = True
        if lease.granted and lease.state == "granting":
            lease.state = "ready"
        return True

    def lease_expected(self) -> bool:
        """A leased worker may be connecting now."""
        return any(not x.connected for x in self.leases.values())

    def _lease_task_over(self, lease_id: str, task_id: str) -> None:
        lease = self.leases.get(lease_id)
        if lease is not None and lease.task_id == task_id and lease.state == "busy":
            lease.state, lease.task_id = "ready", None

    def lease_broken(self, lease_id: str) -> None:
        """Its connection closed (the worker died): send it nothing more.  The raylet's
        LEASE_LOST settles its CPU and its task."""
        lease = self.leases.get(lease_id)
        if lease is not None:
            lease.state = "broken"

    def return_lease(self, lease_id: str) -> bool:
        """Give an idle lease back to its raylet; False if it is not idle."""
        lease = self.leases.get(lease_id)
        if lease is None or lease.state != "ready":
            return False
        del self.leases[lease_id]
        self.scheduler.release(lease.rank, LEASE_DEMAND)
        self.out.append((("lease", lease_id), (m.W_UNLEASE,)))
        self._drain_queues()
        return True

    def _return_idle_leases(self) -> bool:
        """Another kind of work came: idle leases give their CPUs back at once (a lease must
        not keep a task of another shape off its node).  Always False: place the task."""
        for lease_id in [k for k, x in self.leases.items() if x.state == "ready"]:
            self.return_lease(lease_id)
        return False

    def lease_lost(self, rank: int, lease_id: str, why: str, where: str) -> None:
        """The leased worker died (its raylet says so): retry or fail its task."""
        lease = self.leases.pop(lease_id, None)
        if lease is None:
            return
        if lease.granted:
            self.scheduler.release(rank, LEASE_DEMAND)
        task = self.tasks.get(lease.task_id) if lease.task_id else None
        if task is not None and task.lease == lease_id:
            spec = task.spec
            msg = (f"the worker running task {spec.name} ({where}) died: {why}. "
                   f"The task was tried {spec.attempt + 1} time(s) (max_retries={spec.max_retries}).")
            self.task_done(rank, spec.task_id, [], Failure("crash", None, "WorkerCrashedError", msg, "",
                                                           spec.name, where, retryable=True))
        self._drain_queues()

    def _cancel_leased(self, task: Any, force: bool) -> None:
        lease = self.leases.get(task.lease)
        if lease is not None and lease.task_id == task.spec.task_id:
            if force:  # its worker is killed even if the task is just done: no task after it
                lease.state = "broken"
            self.out.append((("lease", lease.lease_id), (m.W_CANCEL, task.spec.task_id, force, lease.pid)))
