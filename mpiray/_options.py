"""The one table of task options, validated in one place.

``TaskOptions`` is what ``@remote(...)`` and ``.options(...)`` produce; every
check lives in ``validate_options`` so the error for a bad value is the same
wherever it came from.  Resource quantities are kept as integers in units of
1/10,000 (Ray's precision), so fractional GPUs add up exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import Any, Mapping

UNIT = 10_000  # resource quantities are stored in 1/UNIT steps

_STRATEGIES = ("DEFAULT", "SPREAD")


@dataclasses.dataclass(frozen=True)
class NodeAffinity:
    """Run on the node with ``node_id``; if ``soft``, anywhere when that node cannot."""

    node_id: str
    soft: bool = False


# Ray's class name, so ``NodeAffinitySchedulingStrategy(node_id=..., soft=...)`` ports as is.
NodeAffinitySchedulingStrategy = NodeAffinity


@dataclasses.dataclass(frozen=True)
class TaskOptions:
    num_cpus: float = 1
    num_gpus: float = 0
    memory: float = 0
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    num_returns: int = 1
    max_retries: int = 3
    retry_exceptions: bool | tuple[type, ...] = False
    scheduling_strategy: str | NodeAffinity = "DEFAULT"
    resolve_nested_refs: bool = True
    name: str = ""

    def replace(self, **changes: Any) -> "TaskOptions":
        return validate_options(self, changes)

    @functools.cached_property
    def units(self) -> dict[str, int]:
        """``demand()``, computed once (the options are frozen); read-only by convention."""
        return self.demand()

    def demand(self) -> dict[str, int]:
        """The resource request in integer units, zero entries left out."""
        out: dict[str, int] = {}
        for key, value in (("CPU", self.num_cpus), ("GPU", self.num_gpus),
                           ("memory", self.memory), *self.resources.items()):
            units = to_units(value)
            if units:
                out[key] = units
        return out


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(TaskOptions))


def to_units(value: float) -> int:
    return int(round(float(value) * UNIT))


def from_units(units: int) -> float:
    value = units / UNIT
    return int(value) if value == int(value) else value


def _number(name: str, value: Any, *, integer: bool = False, minimum: float = 0) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"option {name}={value!r}: expected a number, got {type(value).__name__}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"option {name}={value!r}: must be a finite number")
    if integer and int(value) != value:
        raise ValueError(f"option {name}={value!r}: must be a whole number")
    if value < minimum:
        raise ValueError(f"option {name}={value!r}: must be >= {minimum}")
    return int(value) if integer else value


def validate_options(base: TaskOptions, changes: Mapping[str, Any]) -> TaskOptions:
    """Return ``base`` with ``changes`` applied, or raise TypeError/ValueError naming the fix."""
    unknown = sorted(set(changes) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)}; valid options are: {', '.join(OPTION_NAMES)}")
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name in ("num_cpus", "num_gpus"):
            value = _number(name, value)
            if name == "num_gpus" and value > 1 and int(value) != value:
                raise ValueError(f"option num_gpus={value!r}: fractions are allowed only below 1")
        elif name == "memory":
            value = _number(name, value)
        elif name == "resources":
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise TypeError(f"option resources={value!r}: expected a dict of name -> amount")
            checked = {}
            for key, amount in value.items():
                if not isinstance(key, str) or not key:
                    raise TypeError(f"option resources: resource names must be non-empty strings, got {key!r}")
                if key in ("CPU", "GPU", "memory"):
                    raise ValueError(f"option resources: use num_cpus/num_gpus/memory instead of resources[{key!r}]")
                checked[key] = _number(f"resources[{key!r}]", amount)
            value = checked
        elif name == "num_returns":
            value = _number(name, value, integer=True, minimum=1)
        elif name == "max_retries":
            value = _number(name, value, integer=True, minimum=-1)
        elif name == "retry_exceptions":
            if isinstance(value, (list, tuple)):
                if not all(isinstance(c, type) and issubclass(c, BaseException) for c in value):
                    raise TypeError("option retry_exceptions: a list must hold exception classes only")
                value = tuple(value)
            elif not isinstance(value, bool):
                raise TypeError(f"option retry_exceptions={value!r}: expected True/False or a list of exception classes")
        elif name == "scheduling_strategy":
            if value is None:
                value = "DEFAULT"
            if not (isinstance(value, NodeAffinity) or value in _STRATEGIES):
                raise ValueError(f"option scheduling_strategy={value!r}: expected 'DEFAULT', 'SPREAD' "
                                 "or NodeAffinitySchedulingStrategy(node_id, soft)")
        elif name == "resolve_nested_refs":
            if not isinstance(value, bool):
                raise TypeError(f"option resolve_nested_refs={value!r}: expected True or False")
        elif name == "name":
            if not isinstance(value, str):
                raise TypeError(f"option name={value!r}: expected a string")
        out[name] = value
    return dataclasses.replace(base, **out)


# -- actors --------------------------------------------------------------------
# options of @remote on a class that go to its creation task (resources and placement)
_ACTOR_TASK_OPTIONS = ("num_cpus", "num_gpus", "memory", "resources", "scheduling_strategy")


@dataclasses.dataclass(frozen=True)
class ActorOptions:
    """``@remote(...)`` on a class.  Like Ray, an actor holds no CPU unless it asks for one
    (``num_cpus=0``): its resources are held from its creation until it dies."""

    task: TaskOptions = TaskOptions(num_cpus=0, max_retries=0)
    name: str = ""               # registered for get_actor(name)
    max_restarts: int = 0        # restarts after its worker dies (-1: no limit)
    max_task_retries: int = 0    # re-runs of a call that its worker's death interrupted
    lifetime: str | None = None  # None or "detached": a named actor lives until kill() either way
    get_if_exists: bool = False  # with name=: return the live actor of that name instead


ACTOR_OPTION_NAMES = (*_ACTOR_TASK_OPTIONS, "name", "max_restarts", "max_task_retries", "lifetime",
                      "get_if_exists", "max_concurrency", "namespace")


def validate_actor_options(base: ActorOptions, changes: Mapping[str, Any]) -> ActorOptions:
    """Return ``base`` with ``changes`` applied, or raise TypeError/ValueError naming the fix."""
    unknown = sorted(set(changes) - set(ACTOR_OPTION_NAMES))
    if unknown:
        raise ValueError(f"unknown actor option(s) {', '.join(unknown)}; valid options are: "
                         f"{', '.join(ACTOR_OPTION_NAMES)}")
    task = validate_options(base.task, {k: v for k, v in changes.items() if k in _ACTOR_TASK_OPTIONS})
    out: dict[str, Any] = {"task": task}
    for key, value in changes.items():
        if key in _ACTOR_TASK_OPTIONS:
            continue
        if key == "name":
            if value is None:
                value = ""
            if not isinstance(value, str):
                raise TypeError(f"actor option name={value!r}: expected a string")
        elif key in ("max_restarts", "max_task_retries"):
            value = _number(key, value, integer=True, minimum=-1)
        elif key == "lifetime":
            if value not in (None, "detached", "non_detached"):
                raise ValueError(f"actor option lifetime={value!r}: expected None or 'detached'")
            value = None if value == "non_detached" else value
        elif key == "get_if_exists":
            if not isinstance(value, bool):
                raise TypeError(f"actor option get_if_exists={value!r}: expected True or False")
        elif key == "max_concurrency":
            if _number(key, value, integer=True, minimum=1) != 1:
                raise ValueError(f"actor option max_concurrency={value!r}: an mpiray actor runs its "
                                 "method calls one at a time, in the order they were made; use "
                                 "several actors (or tasks) for parallel work")
            continue
        elif key == "namespace":
            if value is not None and not isinstance(value, str):
                raise TypeError(f"actor option namespace={value!r}: expected a string")
            continue  # one job, one namespace
        out[key] = value
    if out.get("get_if_exists", base.get_if_exists) and not out.get("name", base.name):
        raise ValueError("actor option get_if_exists=True needs name=...")
    return dataclasses.replace(base, **out)


def validate_method_options(changes: Mapping[str, Any]) -> dict:
    """``@mpiray.method(...)`` and ``actor.f.options(...)``: num_returns and name."""
    unknown = sorted(set(changes) - {"num_returns", "name"})
    if unknown:
        raise ValueError(f"unknown actor method option(s) {', '.join(unknown)}; valid options are: "
                         "num_returns, name")
    out = {}
    if "num_returns" in changes:
        out["num_returns"] = _number("num_returns", changes["num_returns"], integer=True, minimum=1)
    if "name" in changes:
        if not isinstance(changes["name"], str):
            raise TypeError(f"option name={changes['name']!r}: expected a string")
        out["name"] = changes["name"]
    return out
