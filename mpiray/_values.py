"""Values in and out of the cluster: task specs from calls, results from ObjInfo.

Shared by the driver (rank 0) and workers, which both submit tasks and read
objects.  ``make_spec`` turns ``f.remote(*args, **kwargs)`` into a TaskSpec;
``encode`` decides inline vs. store for a value; ``decode`` turns an ObjInfo
back into a value or raises the task's error as the caller should see it.
"""

from __future__ import annotations

import itertools
import os
import socket
import traceback
from typing import Any, Callable

from . import exceptions as exc_mod
from ._objref import ObjectRef, RefTracker
from ._options import TaskOptions
from ._protocol.messages import Failure, TaskSpec
from ._serialization import ATOMS, Blob, dumps, loads
from ._store import shm


class IdGen:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self._count = itertools.count(1)

    def task(self) -> str:
        return f"{self.prefix}t{next(self._count):x}"

    def put(self) -> str:
        return f"{self.prefix}p{next(self._count):x}"


# -- arguments ---------------------------------------------------------------
def _walk(value: Any, found: list, nested: bool, depth: int = 0) -> None:
    if isinstance(value, ObjectRef):
        found.append(value.id)
    elif nested and depth < 8:
        if isinstance(value, (list, tuple)):
            for v in value:
                _walk(v, found, nested, depth + 1)
        elif isinstance(value, dict):
            for v in value.values():
                _walk(v, found, nested, depth + 1)


def arg_dependencies(args: tuple, kwargs: dict, nested: bool) -> tuple:
    found: list = []
    for v in (*args, *kwargs.values()):
        if type(v) is ObjectRef:  # the usual case, f.remote(*refs), without a call per item
            found.append(v._id)
        elif type(v) not in ATOMS:
            _walk(v, found, nested)
    return tuple(dict.fromkeys(found))


def _replace(value: Any, values: dict, nested: bool, depth: int = 0) -> Any:
    if isinstance(value, ObjectRef):
        return values[value.id]
    if nested and depth < 8:
        if isinstance(value, list):
            return [_replace(v, values, nested, depth + 1) for v in value]
        if isinstance(value, tuple) and type(value) is tuple:
            return tuple(_replace(v, values, nested, depth + 1) for v in value)
        if isinstance(value, dict) and type(value) is dict:
            return {k: _replace(v, values, nested, depth + 1) for k, v in value.items()}
    return value


def resolve_arguments(args: tuple, kwargs: dict, values: dict, nested: bool) -> tuple[tuple, dict]:
    if not values:
        return args, kwargs
    return (tuple(_replace(v, values, nested) for v in args),
            {k: _replace(v, values, nested) for k, v in kwargs.items()})


def make_spec(task_id: str, name: str, func_id: str, args: tuple, kwargs: dict,
              options: TaskOptions, inline_limit: int,
              store_args: Callable[[Blob], str]) -> TaskSpec:
    """Build the spec; arguments over ``inline_limit`` go to the store via ``store_args``."""
    deps: tuple = ()
    blob = None
    if args or kwargs:
        try:
            blob = dumps((args, kwargs))
        except TypeError as exc:
            raise TypeError(f"{name}.remote(): an argument cannot be serialized "
                            f"({_which_arg(args, kwargs)}): {exc}") from None
        if blob.refs:  # (no ref pickled: none to depend on)
            deps = arg_dependencies(args, kwargs, options.resolve_nested_refs)
    args_ref = None
    arg_refs = blob.refs if blob is not None else ()
    if blob is not None and blob.nbytes() > inline_limit:
        args_ref = store_args(blob)
        deps = deps + (args_ref,)
        arg_refs = arg_refs + (args_ref,)
        blob = None
    elif blob is not None:
        blob = blob.inline()
    n = options.num_returns
    return TaskSpec(
        task_id=task_id, name=options.name or name, func_id=func_id, args=blob, args_ref=args_ref,
        deps=deps, return_ids=tuple(f"{task_id}.{i}" for i in range(n)), demand=options.units,
        max_retries=options.max_retries, retry_exceptions=options.retry_exceptions,
        resolve_nested_refs=options.resolve_nested_refs, strategy=options.scheduling_strategy,
        arg_refs=arg_refs)


def _which_arg(args: tuple, kwargs: dict) -> str:
    for i, v in enumerate(args):
        try:
            dumps(v)
        except TypeError:
            return f"positional argument {i} of type {type(v).__name__}"
    for k, v in kwargs.items():
        try:
            dumps(v)
        except TypeError:
            return f"keyword argument {k!r} of type {type(v).__name__}"
    return "unknown argument"


# -- values ------------------------------------------------------------------
def encode(object_id: str, value: Any, inline_limit: int, store: shm.Store | None,
           rank: int, capacity: int | None = None,
           before_store: Callable[[], None] | None = None) -> tuple[tuple, tuple]:
    """(ObjInfo, contained ref ids) for ``value``; big values are written to ``store``
    (``before_store`` is called first)."""
    blob = dumps(value)
    if blob.nbytes() <= inline_limit or store is None:
        return ("inline", blob.inline()), blob.refs
    if capacity is not None and blob.nbytes() > capacity:
        raise exc_mod.ObjectStoreFullError(
            f"an object of {blob.nbytes() / 2**20:.1f} MiB cannot be stored: the object store of rank "
            f"{rank} holds at most {capacity / 2**20:.1f} MiB (object_store_memory). Raise "
            "object_store_memory (init() or MPIRAY_OBJECT_STORE_MEMORY), or split the value.")
    if before_store is not None:
        before_store()
    size = store.write(object_id, blob)
    return ("shm", rank, size), blob.refs


def decode(object_id: str, info: tuple, tracker: RefTracker | None, store: shm.Store | None) -> Any:
    """The value an ObjInfo describes; raises the task's error if it is one.

    Local infos name a file, ("path", path), or a region of the raylet's arena,
    ("region", offset, nbytes); raylets hand those to workers.
    """
    kind = info[0]
    if kind == "inline":
        blob = info[1]
        return loads(blob.data, blob.buffers, tracker)
    if kind == "path":
        data, bufs = shm.parse(shm.map_file(info[1]))
        return loads(data, bufs, tracker)
    if kind == "region":  # a copy in the raylet's arena (_store/regions.py)
        from ._store import regions

        data, bufs = shm.parse(regions.read(info[1], info[2]))
        return loads(data, bufs, tracker)
    if kind == "shm":
        assert store is not None
        return store.read(object_id, tracker, rank=info[1])
    if kind == "err":
        raise rebuild_error(info[1])
    raise ValueError(f"unknown object info {kind!r}")


# -- errors ------------------------------------------------------------------
def where(rank: int) -> str:
    return f"rank {rank} on host {socket.gethostname()}, pid {os.getpid()}"


def task_failure(exc: BaseException, function: str, rank: int, retry_exceptions: Any) -> Failure:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        blob = dumps(exc).inline()
        loads(blob.data, blob.buffers, None)  # must also come back on the caller
    except Exception:
        blob = None
    retryable = bool(retry_exceptions is True or (
        isinstance(retry_exceptions, tuple) and isinstance(exc, retry_exceptions)))
    return Failure("error", blob, type(exc).__name__, str(exc), tb, function, where(rank), retryable)


_SYSTEM = {"InfeasibleResourceError": exc_mod.InfeasibleResourceError,
           "ObjectStoreFullError": exc_mod.ObjectStoreFullError}


def rebuild_error(f: Failure) -> BaseException:
    """The exception a caller of get() sees for a failed object."""
    if f.kind == "crash":
        return exc_mod.WorkerCrashedError(f.message)
    if f.kind == "cancelled":
        return exc_mod.TaskCancelledError(f.function, f.message)
    if f.kind == "lost":
        return exc_mod.ObjectLostError(f.message)
    if f.kind == "actor":
        return exc_mod.ActorDiedError(f.message)
    if f.kind == "system":
        return _SYSTEM.get(f.type_name, exc_mod.RaySystemError)(f.message)
    header = f"in task {f.function} ({f.where}):\n"
    if f.exc_blob is not None:
        try:
            err = loads(f.exc_blob.data, f.exc_blob.buffers, None)
        except Exception:
            err = None
        if isinstance(err, BaseException) and not isinstance(err, Exception):
            err = None  # (SystemExit, KeyboardInterrupt ... must not end the caller)
        if isinstance(err, BaseException):
            err.__cause__ = exc_mod.RemoteTraceback(header + f.traceback)
            try:
                err.add_note(f"raised in remote task {f.function} ({f.where}); "
                             "the remote traceback is shown above")
            except AttributeError:  # Python < 3.11
                pass
            return err
    return exc_mod.RayTaskError(f.function, header + f.traceback, f"{f.type_name}: {f.message}")
