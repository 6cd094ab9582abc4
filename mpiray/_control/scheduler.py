"""The global scheduler: which node runs a task.  Pure logic, no IO, no MPI.

Each node has total resources (integer units, see ``_options.UNIT``) and an
in-flight load: the demands of tasks sent to it and not yet finished (minus
tasks blocked in ``get``, which release their CPUs).  A node takes new tasks
while its load stays within ``pipeline`` times its capacity, so its raylet
always has a little queued work (tiny tasks never wait for a round trip to
rank 0) without hoarding what other nodes could run.

Placement (``place``):
  * hard node affinity: that node or nothing;
  * soft affinity, then locality: the preferred node if it has room;
  * SPREAD: the node with the fewest tasks in flight;
  * DEFAULT: the least loaded node that has room.
A request no node could hold even when idle raises ``InfeasibleResourceError``.
Tasks that fit somewhere but not now wait in per-shape FIFO queues, so a
release costs one look at each distinct shape, not a scan of every task.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any, Iterable

from .._options import NodeAffinity, from_units
from ..exceptions import InfeasibleResourceError

TASK_SLOTS = "_tasks"  # pseudo-resource: tasks in flight per node (bounds zero-CPU tasks too)


class NodeState:
    __slots__ = ("rank", "node_id", "total", "load", "ntasks", "alive", "limit")

    def __init__(self, rank: int, node_id: str, total: dict[str, int], pipeline: float):
        self.rank = rank
        self.node_id = node_id
        self.total = dict(total)
        self.load: dict[str, int] = {}
        self.ntasks = 0
        self.alive = True
        self.limit = {k: int(v * pipeline) for k, v in total.items()}
        cpus = total.get("CPU", 0) // 10_000
        self.limit[TASK_SLOTS] = max(4, int((cpus or 1) * pipeline * 2))

    def fits_ever(self, demand: dict[str, int]) -> bool:
        return all(self.total.get(k, 0) >= v for k, v in demand.items())

    def has_room(self, demand: dict[str, int], strict: bool = False) -> bool:
        """Room now: within capacity (``strict``) or within the pipelined limit."""
        if self.ntasks >= self.limit[TASK_SLOTS]:
            return False
        load, cap = self.load, (self.total if strict else self.limit)
        for k, v in demand.items():
            used = load.get(k, 0)
            if used + v > cap.get(k, 0) and used > 0:
                return False
        return True

    def utilization(self) -> float:
        cpu = self.total.get("CPU", 0)
        if cpu:
            return self.load.get("CPU", 0) / cpu + self.ntasks * 1e-6
        return self.ntasks / self.limit[TASK_SLOTS]


def describe(resources: dict[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {from_units(v)}" for k, v in sorted(resources.items())) + "}"


class GlobalScheduler:
    def __init__(self, pipeline: float = 2.0):
        self.pipeline = pipeline
        self.nodes: dict[int, NodeState] = {}
        self.by_id: dict[str, int] = {}
        self.queues: OrderedDict[Any, deque] = OrderedDict()
        self._rr = 0

    # -- nodes -------------------------------------------------------------
    def add_node(self, rank: int, node_id: str, total: dict[str, int]) -> None:
        self.nodes[rank] = NodeState(rank, node_id, total, self.pipeline)
        self.by_id[node_id] = rank

    def remove_node(self, rank: int) -> None:
        node = self.nodes.get(rank)
        if node is not None:
            node.alive = False

    # -- feasibility and placement ----------------------------------------
    def check_feasible(self, demand: dict[str, int], strategy: Any) -> None:
        nodes = [n for n in self.nodes.values() if n.alive]
        if isinstance(strategy, NodeAffinity) and not strategy.soft:
            rank = self.by_id.get(strategy.node_id)
            if rank is None or not self.nodes[rank].alive:
                raise InfeasibleResourceError(
                    f"node affinity: no live node has id {strategy.node_id!r}; "
                    f"known nodes: {sorted(self.by_id)}")
            nodes = [self.nodes[rank]]
        if not any(n.fits_ever(demand) for n in nodes):
            have = "; ".join(f"rank {n.rank}: {describe(n.total)}" for n in nodes) or "no nodes"
            raise InfeasibleResourceError(
                f"no node can ever run a task that needs {describe(demand)}; the nodes have: {have}. "
                "Ask for less, or start the job with more resources per node "
                "(init(num_cpus=..., num_gpus=..., resources=...) or MPIRAY_* settings).")

    def place(self, demand: dict[str, int], strategy: Any = "DEFAULT",
              preferred: Iterable[int] = ()) -> int | None:
        """A rank with room for ``demand`` now, or None; raises if it can never fit."""
        if isinstance(strategy, NodeAffinity):
            rank = self.by_id.get(strategy.node_id)
            node = self.nodes.get(rank) if rank is not None else None
            if node is not None and node.alive and node.fits_ever(demand):
                if node.has_room(demand):
                    return rank
                if not strategy.soft:
                    return None
            elif not strategy.soft:
                self.check_feasible(demand, strategy)
        for rank in preferred:
            node = self.nodes.get(rank)
            if node is not None and node.alive and node.fits_ever(demand) and node.has_room(demand):
                return rank
        # first pass: a node with free capacity; second: a node whose queue may grow
        for strict in (True, False):
            best, best_key = None, None
            n = len(self.nodes)
            self._rr += 1
            for i, node in enumerate(self.nodes.values()):
                if not node.alive or not node.fits_ever(demand) or not node.has_room(demand, strict):
                    continue
                if strategy == "SPREAD":
                    key = (node.ntasks, (i - self._rr) % n)
                else:
                    key = (node.utilization(), (i - self._rr) % n)
                if best_key is None or key < best_key:
                    best, best_key = node.rank, key
            if best is not None:
                return best
        self.check_feasible(demand, strategy)
        return None

    # -- load accounting ---------------------------------------------------
    def acquire(self, rank: int, demand: dict[str, int]) -> None:
        node = self.nodes[rank]
        node.ntasks += 1
        for k, v in demand.items():
            node.load[k] = node.load.get(k, 0) + v

    def release(self, rank: int, demand: dict[str, int]) -> None:
        node = self.nodes.get(rank)
        if node is None:
            return
        node.ntasks -= 1
        for k, v in demand.items():
            node.load[k] = node.load.get(k, 0) - v

    def block(self, rank: int, demand: dict[str, int]) -> None:
        """A task blocked in get(): its CPUs are free for others until it resumes."""
        cpu = demand.get("CPU", 0)
        node = self.nodes.get(rank)
        if node is not None:
            node.ntasks -= 1
            if cpu:
                node.load["CPU"] = node.load.get("CPU", 0) - cpu

    def unblock(self, rank: int, demand: dict[str, int]) -> None:
        cpu = demand.get("CPU", 0)
        node = self.nodes.get(rank)
        if node is not None:
            node.ntasks += 1
            if cpu:
                node.load["CPU"] = node.load.get("CPU", 0) + cpu

    # -- waiting queue -----------------------------------------------------
    @staticmethod
    def shape(demand: dict[str, int], strategy: Any) -> Any:
        return (tuple(sorted(demand.items())), strategy)

    def enqueue(self, key: Any, item: Any) -> None:
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = deque()
        q.append(item)

    def queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def available(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node in self.nodes.values():
            if not node.alive:
                continue
            for k, v in node.total.items():
                used = min(node.load.get(k, 0), v)
                out[k] = out.get(k, 0) + max(0, v - used)
        return out

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for node in self.nodes.values():
            if node.alive:
                for k, v in node.total.items():
                    out[k] = out.get(k, 0) + v
        return out
