"""Wire messages: every message is a tuple whose first item is one of the kinds below.

Rank 0 (GCS) and raylets exchange batches (lists) of these over MPI; a raylet
and its workers exchange single messages over a pipe.  Names pair up across
the two sides: a kind sent by one side is handled by a method ``on_<kind>`` on
the other.

Object information (``ObjInfo``) says where an object's bytes are:

    ("inline", Blob)            small value, carried in the message
    ("shm", rank, nbytes)       a file in the store of ``rank``
    ("err", Blob)               the object is an error (the pickled exception info)
"""

from __future__ import annotations

import dataclasses
import operator
from typing import Any

def lease_address(session: str) -> str:
    """The abstract Unix socket rank 0 listens on for leased workers (_control/lease.py)."""
    return f"\0mpiray-{session}-lease"


# rank 0 -> raylet
TASKS = "tasks"            # (TaskSpec, func_bytes | None, {dep_id: ObjInfo}[, actor epoch])
OBJECTS = "objects"        # ([(object_id, ObjInfo)],) answers SUBSCRIBE
FREE = "free"              # ([object_id],)
SHUTDOWN = "shutdown"      # ()
CANCEL = "cancel"          # (task_id, force)
LEASE = "lease"            # (task_id, lease_id) lend that task's worker to rank 0 when it is done
KILL_ACTOR = "kill_actor"  # (actor_id,) end that actor's worker (it answers ACTOR_DIED)
FOUND = "found"            # (token, actor tuple | None) answers LOOKUP

# raylet -> rank 0
REGISTER = "register"      # (NodeInfo dict,)
DONE = "done"              # (task_id, [(object_id, ObjInfo)], failure | None[, run time s])
SUBMIT = "submit"          # (TaskSpec, func_bytes | None)
PUT = "put"                # (object_id, ObjInfo, contained_ref_ids)
SUBSCRIBE = "subscribe"    # ([object_id],)
REFS = "refs"              # ([(object_id, +1 | -1)],)
BLOCKED = "blocked"        # (task_id,)
UNBLOCKED = "unblocked"    # (task_id,)
BYE = "bye"                # ()
LOST = "lost"              # ([object_id], rank) their copies at rank are gone: rebuild or fail them
HEARTBEAT = "hb"           # () sent every second both ways: a silent rank 0 or raylet ends the job;
                           # a raylet's may carry ({"pulls": [(oid, bytes, seconds, way)], "chained": n},)
COPIED = "copied"          # (object_id,) this rank now holds a copy
LEASED = "leased"          # (lease_id, worker_pid) before the DONE of that task (no LEASED: refused)
LEASE_LOST = "lease_lost"  # (lease_id, why, where) the leased worker died or left the lease
KILL = "kill"              # (actor_id, no_restart) a task called mpiray.kill(actor)
LOOKUP = "lookup"          # (token, name) a task called get_actor(name): rank 0 answers FOUND
ACTOR_DIED = "actor_died"  # (actor_id, why, running task id | None, [unstarted task ids]) its worker
                           # is gone; those tasks got no DONE (rank 0 retries or fails them)

# either way, between any two ranks (see _store/transfer.py)
PULL = "pull"              # (object_id, requester_rank) send me the bytes
DATA = "data"              # (object_id, nbytes) the pull starts (nbytes -1: not here)
CHUNK = "chunk"            # (object_id, offset, slot, nbytes) Get it from my staging slot
SLOT_FREE = "slot_free"    # (object_id, slot) done with that slot
DELIVER = "deliver"        # (object_id, requester, offset, room) Put it into my arena there
DELIVERED = "delivered"    # (object_id, nbytes) the Put is complete (-1: not here; -2: no room)

# raylet -> worker
W_RUN = "run"              # (TaskSpec, func_bytes | None, {dep_id: local ObjInfo}, gpu_ids)
# a raylet cancels a running task by creating this file in the session folder, then sending
# the worker SIGINT: the worker raises only inside that task (it may have gone on to the next
# task sent ahead, which the signal must not hit)
def interrupt_path(session_root: str, task_id: str) -> str:
    return f"{session_root}/.interrupt-{task_id}"


# the local ObjInfo of an argument that the task run just before, on the same worker, returns
# (``Raylet._chain``): the worker takes it from that task's results
CHAINED = ("chained",)
W_OBJECTS = "objects"      # (request_id, [(object_id, local ObjInfo)]) answer to W_GET / W_UNGET
W_EXIT = "exit"            # ()
W_LEASE = "lease"          # (lease_id, address) connect to rank 0 there and serve it (_control/lease.py)

# rank 0 -> leased worker, over the lease socket (W_RUN too)
W_UNLEASE = "unlease"      # () the lease ends: back to the raylet
W_CANCEL = "cancel"        # (task_id, force) handled by rank 0 itself (a signal to the worker)

# worker -> raylet
W_READY = "ready"          # (pid,)
W_DONE = "done"            # (task_id, [(object_id, ObjInfo)], failure | None, contained refs)
W_SUBMIT = "submit"        # (TaskSpec, func_bytes | None)
W_PUT = "put"              # (object_id, ObjInfo, contained_ref_ids)
W_GET = "get"              # (request_id, [object_id], needed) the worker waits for W_OBJECTS
W_UNGET = "unget"          # (request_id,) timed out: answer now with what is ready
W_REFS = "refs"            # ([(object_id, +1 | -1)],)
W_BOUNCE = "bounce"        # (task_id,) a prefetched task arrived while blocked in get(): take it back
W_UNLEASED = "unleased"    # () the lease ended: this worker is the raylet's again
W_LEASE_TASK = "lease_task"  # (TaskSpec,) the leased task makes nested calls: account for it
W_MADE = "made"            # ([(object_id, ObjInfo)],) stored results of a leased task
W_KILL = "kill"            # (actor_id, no_restart) the task calls mpiray.kill(actor)
W_LOOKUP = "lookup"        # (request_id, name) get_actor(name): answered by W_OBJECTS
                           # (request_id, [("actor", (actor id, class, methods, class id, oid) | None)])


ACTOR_INIT = "__init__"  # TaskSpec.method of an actor's creation task


def is_method(spec: "TaskSpec") -> bool:
    """A call of an actor's method (runs on its worker, in submission order, holding nothing)."""
    return spec.method is not None and spec.method != ACTOR_INIT


@dataclasses.dataclass(slots=True)
class TaskSpec:
    """Everything needed to run (and re-run) one task."""

    task_id: str
    name: str
    func_id: str
    args: Any                  # Blob of (args, kwargs), or None when args_ref is set
    args_ref: str | None       # object holding the args when they are large
    deps: tuple                # object ids that must exist before the task runs
    return_ids: tuple
    demand: dict               # resource -> units (1/10,000)
    max_retries: int = 3
    retry_exceptions: Any = False
    resolve_nested_refs: bool = True
    strategy: Any = "DEFAULT"
    arg_refs: tuple = ()       # every ref carried by the args (kept alive while pending)
    attempt: int = 0
    parent: str | None = None  # the task that submitted this one (for recursive cancel)
    # actors (``_actor.py``): the actor's id (its creation task's id) for its creation task and
    # its method calls; ``method`` is ACTOR_INIT for the creation task; ``actor_opts`` (creation
    # only) is an ``ActorOptions``-like tuple: (class name, methods, name, max_restarts,
    # max_task_retries, get_if_exists)
    actor: str | None = None
    method: str | None = None
    actor_opts: tuple = ()

    def __reduce__(self):  # positional fields: half the bytes and time of the default
        return (TaskSpec, _spec_fields(self))


_spec_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(TaskSpec)))


@dataclasses.dataclass(slots=True)
class Failure:
    """Why a task failed: the pickled exception (if it pickles) and the remote traceback."""

    kind: str                  # "error" (task raised) | "crash" (worker died) | "cancelled" | "lost"
                               # | "actor" (the actor of a method call died or is gone)
                               # | "lostdep" (an argument's bytes are gone: rebuild, run again) | "system"
    exc_blob: Any              # Blob of the exception, or None
    type_name: str
    message: str
    traceback: str
    function: str
    where: str                 # "rank 1 on host x, pid 123"
    retryable: bool = False    # set by the raylet for crashes and by retry_exceptions
    lost: tuple = ()           # for "lostdep": the object ids that were missing
