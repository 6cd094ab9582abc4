"""Actors on the API side: ``@remote`` on a class, handles, method calls, ``kill``.

``Cls.remote(*args)`` submits the actor's creation task (``TaskSpec.method ==
ACTOR_INIT``; the actor's id is that task's id) and returns an ``ActorHandle``
at once.  ``handle.f.remote(*args)`` submits a call: a task with no resources
that runs on the actor's worker, in the order the calls were made
(``_control/actors.py`` on rank 0, ``_node/actors.py`` on the raylet).

A handle holds an ObjectRef to the creation task's result, and each call's
spec carries that ref too: the actor lives while some handle or pending call
does (or until ``kill``; a named actor until ``kill``).  Handles pickle, so
they can be passed to tasks and other actors.
"""

from __future__ import annotations

from _blake2 import blake2b
from typing import Any, Callable

from ._objref import ObjectRef
from ._options import ActorOptions, TaskOptions, validate_actor_options, validate_method_options
from ._protocol.messages import ACTOR_INIT
from ._serialization import dumps_function

_NUM_RETURNS = "__mpiray_num_returns__"
_CALL = TaskOptions(num_cpus=0, max_retries=0)  # a call holds no resources


def method(*args: Any, **options: Any) -> Callable:
    """``@mpiray.method(num_returns=2)`` on an actor's method (Ray's ``ray.method``)."""
    if args:
        raise TypeError("@mpiray.method takes keyword options only, e.g. @mpiray.method(num_returns=2)")
    checked = validate_method_options(options)

    def mark(func: Callable) -> Callable:
        setattr(func, _NUM_RETURNS, checked.get("num_returns", 1))
        return func
    return mark


def _method_table(cls: type) -> dict[str, int]:
    """Public methods (and ``__call__``) of ``cls`` -> their num_returns."""
    table = {}
    for name in dir(cls):
        if name.startswith("__") and name != "__call__":
            continue
        attr = getattr(cls, name, None)
        if callable(attr):
            table[name] = getattr(attr, _NUM_RETURNS, 1)
    return table


class ActorClass:
    """What ``@mpiray.remote`` makes of a class: ``Cls.remote(...)`` starts an actor."""

    def __init__(self, cls: type, options: ActorOptions):
        self._cls = cls
        self._options = options
        self._name = cls.__qualname__
        self._mpiray_methods = _method_table(cls)
        self._export: tuple[str, bytes] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor class {self._name} cannot be instantiated directly; use "
                        f"{self._name}.remote(...) to start an actor")

    def _exported(self) -> tuple[str, bytes]:
        if self._export is None:
            data = dumps_function(self._cls)
            self._export = (blake2b(data, digest_size=8).hexdigest(), data)
        return self._export

    def remote(self, *args: Any, **kwargs: Any) -> "ActorHandle":
        from ._api import _rt

        rt = _rt()
        opts = self._options
        if opts.name and opts.get_if_exists:
            try:
                return get_actor(opts.name)
            except ValueError:
                pass  # none yet: make it
        func_id, data = self._exported()
        about = (self._name, self._mpiray_methods, opts.name, opts.max_restarts,
                 opts.max_task_retries, opts.get_if_exists)

        def amend(spec: Any) -> None:
            spec.actor, spec.method, spec.actor_opts = spec.task_id, ACTOR_INIT, about

        ref = rt.submit(func_id, data, f"{self._name}.__init__", args, kwargs, opts.task, amend)[0]
        return ActorHandle(ref.task_id(), self._name, self._mpiray_methods, func_id, ref)

    def options(self, **options: Any) -> "ActorClass":
        clone = ActorClass.__new__(ActorClass)
        clone.__dict__.update(self.__dict__)
        clone._options = validate_actor_options(self._options, options)
        return clone

    def __repr__(self) -> str:
        return f"<mpiray actor class {self._name}>"


def _rebuild_handle(actor_id: str, class_name: str, methods: dict, func_id: str,
                    ref: ObjectRef) -> "ActorHandle":
    return ActorHandle(actor_id, class_name, methods, func_id, ref)


class ActorHandle:
    """A running actor: call its methods with ``handle.method.remote(...)``; pass it to
    tasks; ``mpiray.kill(handle)`` ends it."""

    def __init__(self, actor_id: str, class_name: str, methods: dict, func_id: str, ref: ObjectRef):
        self._actor_id = actor_id
        self._mpiray_class_name = class_name
        self._mpiray_methods = methods
        self._mpiray_func_id = func_id
        self._mpiray_ref = ref  # the creation's result: the actor lives while a handle does

    def __getattr__(self, name: str) -> "ActorMethod":
        methods = self.__dict__.get("_mpiray_methods")
        if methods is None or name not in methods:
            raise AttributeError(f"actor {self.__dict__.get('_mpiray_class_name', '?')} has no method "
                                 f"{name!r}")
        return ActorMethod(self, name, methods[name], "")

    def __reduce__(self):
        return (_rebuild_handle, (self._actor_id, self._mpiray_class_name, self._mpiray_methods,
                                  self._mpiray_func_id, self._mpiray_ref))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._mpiray_class_name}, {self._actor_id})"


class ActorMethod:
    """``handle.method``: ``.remote(...)`` calls it; ``.options(num_returns=...)``."""

    def __init__(self, handle: ActorHandle, name: str, num_returns: int, task_name: str):
        self._handle, self._name = handle, name
        self._num_returns, self._task_name = num_returns, task_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"actor method {self._handle._mpiray_class_name}.{self._name} cannot be called "
                        f"directly; use .{self._name}.remote(...)")

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        from ._api import _rt

        h = self._handle
        options = _CALL if self._num_returns == 1 else _CALL.replace(num_returns=self._num_returns)
        keep = h._mpiray_ref.id

        def amend(spec: Any) -> None:
            spec.actor, spec.method = h._actor_id, self._name
            spec.arg_refs = spec.arg_refs + (keep,)  # a pending call keeps the actor alive

        name = self._task_name or f"{h._mpiray_class_name}.{self._name}"
        refs = _rt().submit(h._mpiray_func_id, None, name, args, kwargs, options, amend)
        return refs[0] if self._num_returns == 1 else refs

    def options(self, **options: Any) -> "ActorMethod":
        checked = validate_method_options(options)
        return ActorMethod(self._handle, self._name, checked.get("num_returns", self._num_returns),
                           checked.get("name", self._task_name))


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """End ``actor`` now: its running call and queued calls fail with ``ActorDiedError``.
    With ``no_restart=False`` an actor with restarts left is restarted instead."""
    from ._api import _rt

    if not isinstance(actor, ActorHandle):
        raise TypeError(f"kill() expects an actor handle, got {type(actor).__name__}")
    if not isinstance(no_restart, bool):
        raise TypeError("kill(): no_restart must be True or False")
    _rt().kill_actor(actor._actor_id, no_restart)


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """The handle of the live actor named ``name`` (raises ValueError if there is none).
    ``namespace`` is accepted for Ray's signature: a job is one namespace."""
    from ._api import _rt

    if not isinstance(name, str) or not name:
        raise TypeError(f"get_actor() expects an actor name (a non-empty string), got {name!r}")
    rt = _rt()
    actor_id, class_name, methods, func_id, oid = rt.get_actor(name)
    return ActorHandle(actor_id, class_name, methods, func_id, ObjectRef(oid, rt.tracker))
