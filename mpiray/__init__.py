"""mpiray: Ray's task model on MPI.  ``import mpiray as ray`` and keep your Ray Core script.

Importing mpiray has no side effects: MPI, threads and processes start in ``init()``.
"""

from . import actor, exceptions, util
from ._actor import ActorClass, ActorHandle, get_actor, kill, method
from ._api import (
    RemoteFunction,
    RuntimeContext,
    available_resources,
    cancel,
    cluster_resources,
    get,
    get_gpu_ids,
    get_runtime_context,
    init,
    is_initialized,
    nodes,
    put,
    remote,
    shutdown,
    wait,
)
from ._objref import ObjectRef
from ._options import NodeAffinitySchedulingStrategy

__version__ = "0.1.0"

__all__ = [
    "ActorClass",
    "ActorHandle",
    "NodeAffinitySchedulingStrategy",
    "ObjectRef",
    "actor",
    "RemoteFunction",
    "RuntimeContext",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]
