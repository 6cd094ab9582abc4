"""Exceptions raised by mpiray.

The hierarchy::

    Exception
     └── MpirayError                      base of everything mpiray raises itself
          ├── RayTaskError                 a task raised and its exception could not be
          │                                rebuilt on the caller (otherwise the caller gets
          │                                the original type, e.g. ValueError, with the
          │                                remote traceback chained as its cause)
          ├── RaySystemError               the runtime is unusable (not initialised, a rank died)
          ├── GetTimeoutError              get() ran out of time (also a TimeoutError)
          ├── TaskCancelledError           the task was cancelled before it finished
          ├── WorkerCrashedError           the worker process running the task died
          ├── ObjectLostError              an object's bytes are gone and cannot be rebuilt
          ├── ObjectStoreFullError         the node store cannot hold the object
          ├── InfeasibleResourceError      no node can ever satisfy the resource request
          │                                (also a ValueError)
          ├── RayActorError                an actor cannot run a method call
          │    └── ActorDiedError          ... because it is dead (the message says why)
          └── RemoteTraceback              carries a remote traceback as text; used as the
                                           ``__cause__`` of re-raised task exceptions

Every message says what happened and, where there is one, what to do about it.
"""

from __future__ import annotations

__all__ = [
    "MpirayError",
    "RayError",
    "RayTaskError",
    "RaySystemError",
    "GetTimeoutError",
    "TaskCancelledError",
    "WorkerCrashedError",
    "ObjectLostError",
    "ObjectStoreFullError",
    "InfeasibleResourceError",
    "RayActorError",
    "ActorDiedError",
    "RemoteTraceback",
]


class MpirayError(Exception):
    """Base class of the errors mpiray raises itself."""


#: Ray's name for the base class, so ``except ray.exceptions.RayError`` keeps working.
RayError = MpirayError


class RemoteTraceback(MpirayError):
    """The formatted traceback of an exception raised in a task on another process."""

    def __init__(self, tb: str):
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class RayTaskError(MpirayError):
    """A task raised an exception that cannot be re-raised as its own type here.

    ``cause_repr`` is the repr of the original exception; the message holds the
    remote traceback with the function name, rank, host and pid.
    """

    def __init__(self, function_name: str, traceback_str: str, cause_repr: str = ""):
        super().__init__(function_name, traceback_str, cause_repr)
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause_repr = cause_repr

    def __str__(self) -> str:
        return f"task {self.function_name} failed: {self.cause_repr}\n{self.traceback_str}"


class RaySystemError(MpirayError):
    """The runtime cannot go on: not initialised, shut down, or a rank died."""


class GetTimeoutError(MpirayError, TimeoutError):
    """``get(..., timeout=)`` expired before every object was ready."""


class TaskCancelledError(MpirayError):
    """The task that makes this object was cancelled."""

    def __init__(self, task_id: str = "", message: str = ""):
        super().__init__(task_id, message)
        self.task_id = task_id
        self.message = message or f"task {task_id} was cancelled"

    def __str__(self) -> str:
        return self.message


class WorkerCrashedError(MpirayError):
    """The worker process running the task died (exit code or signal in the message)."""


class ObjectLostError(MpirayError):
    """The object's bytes are gone and it cannot be rebuilt from lineage."""


class ObjectStoreFullError(MpirayError):
    """The node's object store cannot hold the object, even after spilling."""


class InfeasibleResourceError(MpirayError, ValueError):
    """No node in the cluster can ever satisfy the task's resource request."""


class RayActorError(MpirayError):
    """An actor cannot run the method call: it died, was killed, or never started."""


class ActorDiedError(RayActorError):
    """The actor is dead: its constructor raised, its worker died (with no restart left),
    ``mpiray.kill`` ended it, or every handle to it was dropped.  The message says which."""
