"""The public API's edge: the one place that looks up this process's runtime.

On the driver the runtime is a ``DriverRuntime`` (rank 0) made by ``init``;
inside a task it is the worker's ``WorkerRuntime``.  Everything below checks
its arguments, then hands them to that object.
"""

from __future__ import annotations

import atexit
import functools
from _blake2 import blake2b  # not hashlib: it loads OpenSSL's libcrypto (~3.5 MiB in every process)
import numbers
from typing import Any, Callable

from . import exceptions
from ._config import Config
from ._objref import ObjectRef
from ._actor import ActorClass
from ._options import (ACTOR_OPTION_NAMES, OPTION_NAMES, ActorOptions, TaskOptions,
                       validate_actor_options, validate_options)
from ._serialization import dumps_function

_runtime: Any = None
_atexit_registered = False
_accept_script_init = False  # set by `python -m mpiray`: the script's own init() is a no-op


def _set_worker_runtime(rt: Any) -> None:
    global _runtime
    _runtime = rt


def _rt() -> Any:
    if _runtime is None:
        raise exceptions.RaySystemError(
            "mpiray is not initialised: call mpiray.init() first (or run the script with "
            "`python -m mpiray script.py`)")
    return _runtime


# -- lifecycle ----------------------------------------------------------------
def init(num_cpus: float | None = None, num_gpus: float | None = None, memory: int | None = None,
         resources: dict | None = None, *, num_nodes: int | None = None,
         object_store_memory: int | None = None, ignore_reinit_error: bool = False,
         log_to_driver: bool | None = None, **unsupported: Any) -> dict:
    """Start mpiray, or join the job's ranks.

    Under ``mpiexec``/``srun`` every rank calls ``init``: rank 0 returns (the
    driver) and the others serve as raylets until ``shutdown``, then exit.
    Alone (``python app.py``), ``init`` starts ``num_nodes`` local raylet ranks,
    each with ``num_cpus``/``num_gpus``/``memory``/``resources`` (default: this
    machine's allocation, shared between them).
    """
    global _runtime, _atexit_registered
    if unsupported:
        raise TypeError(f"init() got unsupported argument(s) {', '.join(sorted(unsupported))}; "
                        "supported: num_cpus, num_gpus, memory, resources, num_nodes, "
                        "object_store_memory, ignore_reinit_error, log_to_driver")
    if _runtime is not None:
        if not _runtime.is_driver:
            return {}
        if ignore_reinit_error or _accept_script_init:
            return _context_dict()
        raise RuntimeError("mpiray.init() was already called; call mpiray.shutdown() first, "
                           "or pass ignore_reinit_error=True")
    init_args = {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": memory, "resources": resources}
    config = Config.from_env().with_args(num_nodes=num_nodes, object_store_memory=object_store_memory,
                                         log_to_driver=log_to_driver, **init_args)
    from ._startup import start_driver

    _runtime = start_driver(config, {k: v for k, v in init_args.items() if v is not None})
    if not _atexit_registered:
        atexit.register(_shutdown_at_exit)
        _atexit_registered = True
    return _context_dict()


def _context_dict() -> dict:
    rt = _rt()
    return {"session": rt.session, "num_nodes": len(rt.gcs.nodes)}


def is_initialized() -> bool:
    """True on the driver after init(), and inside tasks and actors (as in Ray)."""
    return _runtime is not None


def shutdown() -> None:
    """Stop every raylet and worker of the cluster (no-op if not initialised)."""
    global _runtime, _accept_script_init
    rt, _runtime = _runtime, None
    _accept_script_init = False
    if rt is not None and rt.is_driver:
        rt.shutdown()
    elif rt is not None:
        _runtime = rt  # inside a task: shutting down the cluster is the driver's job


def _shutdown_at_exit() -> None:
    try:
        shutdown()
    except Exception as exc:  # pragma: no cover - reported, exit goes on
        import sys

        print(f"mpiray: shutdown at exit failed: {exc}", file=sys.stderr)


# -- remote functions ---------------------------------------------------------
class RemoteFunction:
    """What ``@mpiray.remote`` makes of a function: call it with ``.remote()``."""

    def __init__(self, func: Callable, options: TaskOptions):
        self._func = func
        self._options = options
        self._name = getattr(func, "__qualname__", repr(func))
        self._export: tuple[str, bytes] | None = None
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"remote function {self._name} cannot be called directly; "
                        f"use {self._name}.remote(...) to run it as a task "
                        f"(or {self._name}._function(...) to call the plain Python function)")

    @property
    def _function(self) -> Callable:
        return self._func

    def _exported(self) -> tuple[str, bytes]:
        if self._export is None:
            data = dumps_function(self._func)
            self._export = (blake2b(data, digest_size=8).hexdigest(), data)
        return self._export

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        rt = _rt()
        func_id, data = self._exported()
        refs = rt.submit(func_id, data, self._name, args, kwargs, self._options)
        return refs[0] if self._options.num_returns == 1 else refs

    def options(self, **options: Any) -> "RemoteFunction":
        clone = RemoteFunction.__new__(RemoteFunction)
        clone.__dict__.update(self.__dict__)
        clone._options = validate_options(self._options, options)
        return clone

    def __repr__(self) -> str:
        return f"<mpiray remote function {self._name}>"


def remote(*args: Any, **options: Any) -> Any:
    """``@remote`` or ``@remote(num_cpus=..., num_gpus=..., ...)`` on a function or a class
    (an actor: ``_actor.py``)."""
    if len(args) == 1 and not options and callable(args[0]):
        return _make_remote(args[0], {})
    if args:
        raise TypeError("@remote takes either a function or keyword options, e.g. @remote(num_gpus=1)")
    unknown = sorted(set(options) - set(OPTION_NAMES) - set(ACTOR_OPTION_NAMES))
    if unknown:  # (the rest is checked for a function or a class when it is applied)
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; valid options are: "
                         f"{', '.join(OPTION_NAMES)} (functions) and {', '.join(ACTOR_OPTION_NAMES)} "
                         "(classes)")
    return lambda f: _make_remote(f, options)


def _make_remote(obj: Any, options: dict) -> Any:
    if isinstance(obj, type):
        return ActorClass(obj, validate_actor_options(ActorOptions(), options))
    if not callable(obj):
        raise TypeError(f"@remote expects a function or a class, got {type(obj).__name__}")
    return RemoteFunction(obj, validate_options(TaskOptions(), options))


# -- objects ------------------------------------------------------------------
def _check_timeout(timeout: Any) -> None:
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, numbers.Real)
                                or timeout < 0 or timeout != timeout):
        raise ValueError(f"timeout={timeout!r}: expected None or a number >= 0")


def get(refs: Any, *, timeout: float | None = None) -> Any:
    """The value of an ObjectRef, or the values of a list of them (in order).

    Values that are not ObjectRefs are returned unchanged, so code that calls
    ``get`` on arguments already resolved by mpiray keeps working.
    """
    _check_timeout(timeout)
    if isinstance(refs, ObjectRef):
        return _rt().get([refs], timeout)[0]
    if isinstance(refs, (list, tuple)):
        positions = [i for i, r in enumerate(refs) if isinstance(r, ObjectRef)]
        out = list(refs)
        if positions:
            values = _rt().get([refs[i] for i in positions], timeout)
            for i, v in zip(positions, values):
                out[i] = v
        return out
    return refs


def put(value: Any) -> ObjectRef:
    """Store ``value`` in the cluster and return its ObjectRef."""
    return _rt().put(value)


def wait(refs: list, *, num_returns: int = 1, timeout: float | None = None,
         fetch_local: bool = True) -> tuple[list, list]:
    """Split ``refs`` into (ready, not ready) once ``num_returns`` are ready or time is up."""
    if isinstance(refs, ObjectRef) or not isinstance(refs, (list, tuple)):
        raise TypeError(f"wait() expects a list of ObjectRefs, got {type(refs).__name__}")
    if not all(isinstance(r, ObjectRef) for r in refs):
        raise TypeError("wait() expects a list of ObjectRefs only")
    if len(set(refs)) != len(refs):
        raise ValueError("wait() got the same ObjectRef more than once")
    if isinstance(num_returns, bool) or not isinstance(num_returns, int) or not 1 <= num_returns <= max(1, len(refs)):
        raise ValueError(f"num_returns={num_returns!r}: expected a whole number from 1 to len(refs)={len(refs)}")
    _check_timeout(timeout)
    if not refs:
        return [], []
    return _rt().wait(list(refs), num_returns, timeout)


def cancel(ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that makes ``ref``.

    A queued task never runs; a running one gets ``KeyboardInterrupt`` (or, with
    ``force=True``, its worker is killed); with ``recursive`` the tasks it
    submitted are cancelled too.  ``get`` then raises ``TaskCancelledError``;
    cancelled tasks are not retried.  A task that already finished keeps its result.
    """
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(ref).__name__}")
    if not isinstance(force, bool) or not isinstance(recursive, bool):
        raise TypeError("cancel(): force and recursive must be True or False")
    _rt().cancel(ref, force, recursive)


# -- cluster information ------------------------------------------------------
def nodes() -> list[dict]:
    return _rt().nodes()


def cluster_resources() -> dict:
    return _rt().cluster_resources()


def available_resources() -> dict:
    return _rt().available_resources()


class RuntimeContext:
    """Where the caller runs: node, rank, host, task and the resources assigned to it."""

    def __init__(self, ctx: dict):
        self._ctx = ctx
        self.rank = ctx["rank"]
        self.host = ctx["host"]
        self.pid = ctx["pid"]

    def get_node_id(self) -> str:
        return self._ctx["node_id"]

    def get_task_id(self) -> str | None:
        return self._ctx["task_id"]

    def get_job_id(self) -> str:
        return self._ctx["job_id"]

    def get_assigned_resources(self) -> dict:
        return dict(self._ctx["assigned_resources"])

    def get_accelerator_ids(self) -> dict:
        return {"GPU": list(self._ctx["gpu_ids"])}

    def get_actor_id(self) -> str | None:
        """The id of the actor whose method is running (None outside actors)."""
        return self._ctx.get("actor_id")

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    def __repr__(self) -> str:
        return f"RuntimeContext({self._ctx})"


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(_rt().context())


def get_gpu_ids() -> list:
    """The GPU ids assigned to the calling task (ints where numeric, as in Ray)."""
    ids = _rt().context()["gpu_ids"]
    return [int(g) if str(g).isdigit() else g for g in ids]
