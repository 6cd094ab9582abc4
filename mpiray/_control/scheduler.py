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
  * then a strict pass (nodes with free capacity) and, if it finds none, a
    pipelined pass (nodes whose load may grow up to ``pipeline`` x capacity),
    each taking, for SPREAD, the node with the fewest tasks in flight and,
    for DEFAULT, the least loaded node that has room.
A request no node could hold even when idle raises ``InfeasibleResourceError``.
Tasks that fit somewhere but not now wait in per-shape FIFO queues, so a
release costs one look at each distinct shape, not a scan of every task;
``ready_keys`` narrows that to the queues whose head may fit now (those whose
candidate nodes had a release since the last call), in queue order.

The index that keeps placement O(1) amortized on large clusters::

    demand ──key──► _Shape (cached per distinct demand; dropped when a node joins or leaves)
                      ├─ nodes: the live nodes that could ever hold it  (empty: infeasible)
                      ├─ free:  candidates that may have room within capacity   (strict pass)
                      └─ open:  candidates that may have room within the pipeline limit
    release / block ──► the node rejoins free and open of every shape it belongs to,
                        and wakes the queues of those shapes (and its hard-affinity queues)
    place ──► pick from free, else open; a candidate found without room leaves that set

Room only appears when a load goes down, so each set always holds every node
that has room (and maybe some that do not: they are dropped when looked at).
A pass scans its whole set exactly (deterministic: least loaded, ties rotate)
on clusters of up to ``EXACT_NODES`` nodes or when few candidates are left;
otherwise DEFAULT takes the best of ``SAMPLES`` random candidates with room
("power of k choices", like Ray's hybrid policy) and SPREAD the fewest tasks
among the next ``SAMPLES`` candidates in round-robin order (like Ray's spread
policy), so both balance load closely but not exactly.  Either way a
pipelined placement happens only when no node has free capacity for the
request.  Infeasibility is cached per demand (with its message) until a node
joins or leaves.  ``benchmarks/scheduler_bench.py`` measures all this on
1,000 simulated nodes.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from typing import Any, Iterable, Iterator

from .._options import NodeAffinity, from_units
from ..exceptions import InfeasibleResourceError

TASK_SLOTS = "_tasks"  # pseudo-resource: tasks in flight per node (bounds zero-CPU tasks too)
EXACT_NODES = 64  # clusters up to this size: every pass is an exact scan
EXACT_CANDIDATES = 8  # this few candidates left: an exact scan on any cluster
SAMPLES = 4  # otherwise: the best of this many random candidates with room
MAX_SHAPES = 1024  # distinct demands indexed at once; more: the index starts over
LIST_NODES = 16  # an infeasibility message lists nodes one by one up to this many


class NodeState:
    __slots__ = ("rank", "node_id", "total", "load", "ntasks", "alive", "limit", "slots", "index",
                 "shapes", "keys", "held", "pipeline")

    def __init__(self, rank: int, node_id: str, total: dict[str, int], pipeline: float,
                 index: int = 0):
        self.rank = rank
        self.node_id = node_id
        self.total = dict(total)
        self.load: dict[str, int] = {}
        self.ntasks = 0
        self.alive = True
        self.pipeline = pipeline
        self.held: dict[str, int] = {}  # what actors hold for their lifetime (part of load)
        self.limit = {k: int(v * pipeline) for k, v in total.items()}
        cpus = total.get("CPU", 0) // 10_000
        self.slots = self.limit[TASK_SLOTS] = max(4, int((cpus or 1) * pipeline * 2))
        self.index = index  # position in the scheduler's node table: the rotating tie-break
        self.shapes: list[_Shape] = []  # indexed demands this node could hold
        self.keys: dict[Any, int] = {}  # queue keys with hard affinity to this node -> order

    def hold(self, demand: dict[str, int], sign: int) -> None:
        """Actors hold ``demand`` here (``sign`` 1) or no longer (-1).  Only the rest of the
        node is pipelined: a task queued behind an actor's resources would wait for as long
        as the actor lives."""
        for k, v in demand.items():
            h = self.held[k] = self.held.get(k, 0) + sign * v
            if not h:
                del self.held[k]
            self.limit[k] = h + int((self.total.get(k, 0) - h) * self.pipeline)

    def fits_ever(self, demand: dict[str, int]) -> bool:
        return all(self.total.get(k, 0) >= v for k, v in demand.items())

    def has_room(self, demand: dict[str, int], strict: bool = False, depth: int = 1) -> bool:
        """Room now: within capacity (``strict``) or within the pipelined limit."""
        return self.room(demand.items(), strict, depth)

    def room(self, items: Iterable[tuple[str, int]], strict: bool, depth: int = 1) -> bool:
        """``depth`` deepens the pipelined limit (short tasks: a longer queue is still short)."""
        if self.ntasks >= self.slots * depth:
            return False
        load = self.load
        if strict:
            cap, mult = self.total, 1
        else:
            cap, mult = self.limit, depth
        held = self.held if mult != 1 else None
        for k, v in items:
            used = load.get(k, 0)
            if used > 0:
                if held and k in held:  # a deeper queue deepens what is not held only
                    h = held[k]
                    if used + v > h + (cap.get(k, 0) - h) * mult:
                        return False
                elif used + v > cap.get(k, 0) * mult:
                    return False
        return True

    def utilization(self) -> float:
        cpu = self.total.get("CPU", 0)
        if cpu:
            return self.load.get("CPU", 0) / cpu + self.ntasks * 1e-6
        return self.ntasks / self.slots


class _Candidates:
    """Nodes that may have room: O(1) add, remove and uniform random pick."""

    __slots__ = ("items", "pos", "cursor")

    def __init__(self, nodes: list[NodeState]):
        self.items = list(nodes)
        self.pos = {node: i for i, node in enumerate(self.items)}
        self.cursor = 0  # SPREAD: where the next round-robin look starts

    def add(self, node: NodeState) -> None:
        if node not in self.pos:
            self.pos[node] = len(self.items)
            self.items.append(node)

    def remove(self, node: NodeState) -> None:
        i = self.pos.pop(node)
        last = self.items.pop()
        if last is not node:
            self.items[i] = last
            self.pos[last] = i


class _Waiters:
    """Queue keys (key -> queue order) outside the index, tried after every release."""

    __slots__ = ("keys",)

    def __init__(self) -> None:
        self.keys: dict[Any, int] = {}


class _Shape:
    """One distinct demand: the nodes that could ever hold it and those that may now."""

    __slots__ = ("items", "depth", "nodes", "members", "free", "open", "error", "keys")

    def __init__(self, items: tuple[tuple[str, int], ...], nodes: list[NodeState], depth: int = 1):
        self.items = items
        self.depth = depth  # pipelined room is ``depth`` x the node's limit (short tasks)
        self.nodes = nodes
        self.members = set(nodes)
        self.free = _Candidates(nodes)
        self.open = _Candidates(nodes)
        self.error: str | None = None
        self.keys: dict[Any, int] = {}  # queue keys placed over these nodes -> queue order


def describe(resources: dict[str, int]) -> str:
    return "{" + ", ".join(f"{k}: {from_units(v)}" for k, v in sorted(resources.items())) + "}"


def infeasible_message(demand: dict[str, int], nodes: list[NodeState]) -> str:
    """Why no node can run ``demand``: the request and what the nodes have."""
    if len(nodes) <= LIST_NODES:
        have = "; ".join(f"rank {n.rank}: {describe(n.total)}" for n in nodes) or "no nodes"
    else:  # a large cluster: one line per kind of node, and the most any node has
        kinds: dict[str, list[int]] = {}
        most: dict[str, int] = {}
        for n in nodes:
            kinds.setdefault(describe(n.total), []).append(n.rank)
            for k, v in n.total.items():
                most[k] = max(most.get(k, 0), v)
        ordered = sorted(kinds.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))
        parts = [f"{len(ranks)} x {desc} (rank{'s' if len(ranks) > 1 else ''} "
                 f"{', '.join(map(str, ranks[:3]))}{', ...' if len(ranks) > 3 else ''})"
                 for desc, ranks in ordered[:LIST_NODES]]
        if len(ordered) > LIST_NODES:
            parts.append(f"{len(ordered) - LIST_NODES} more kinds")
        have = (f"{len(nodes)} nodes, at most {describe(most)} on any one: "
                + "; ".join(parts))
    return (f"no node can ever run a task that needs {describe(demand)}; the nodes have: {have}. "
            "Ask for less, or start the job with more resources per node "
            "(init(num_cpus=..., num_gpus=..., resources=...) or MPIRAY_* settings).")


class GlobalScheduler:
    def __init__(self, pipeline: float = 2.0, seed: int = 0):
        self.pipeline = pipeline
        self.nodes: dict[int, NodeState] = {}
        self.by_id: dict[str, int] = {}
        self.queues: OrderedDict[Any, deque] = OrderedDict()
        self._rr = 0
        self._shapes: dict[tuple, _Shape] = {}
        self._random = random.Random(seed).random
        self._seq = 0  # queues made so far: the queue order of the keys
        self._woken: set = set()  # shapes and nodes whose queue keys may be placeable again
        self._wake_all = False  # the index was rebuilt: every queue may be placeable
        self._always = _Waiters()  # queue keys not made by shape(): always tried

    # -- nodes -------------------------------------------------------------
    def add_node(self, rank: int, node_id: str, total: dict[str, int]) -> None:
        self._forget_shapes()
        old = self.nodes.get(rank)
        index = old.index if old is not None else len(self.nodes)
        self.nodes[rank] = NodeState(rank, node_id, total, self.pipeline, index)
        self.by_id[node_id] = rank

    def remove_node(self, rank: int) -> None:
        node = self.nodes.get(rank)
        if node is not None:
            node.alive = False
            self._forget_shapes()

    # -- the shape index -----------------------------------------------------
    def _forget_shapes(self) -> None:
        """Nodes changed: rebuild the index on demand; queue registrations go with it."""
        self._woken.clear()
        if self.queues:
            self._wake_all = True
        if self._shapes or self.queues:
            for node in self.nodes.values():
                node.shapes.clear()
                node.keys.clear()
            self._shapes.clear()

    def _shape(self, demand: dict[str, int], depth: int = 1) -> _Shape:
        items = tuple(demand.items())
        key = (items, depth)
        shape = self._shapes.get(key)
        if shape is None:
            if len(self._shapes) >= MAX_SHAPES:
                self._forget_shapes()
            nodes = [n for n in self.nodes.values() if n.alive and n.fits_ever(demand)]
            shape = self._shapes[key] = _Shape(items, nodes, depth)
            for n in nodes:
                n.shapes.append(shape)
        return shape

    def _reopen(self, node: NodeState) -> None:
        """Load went down: the node may have room again for any shape it can hold."""
        woken = self._woken
        for shape in node.shapes:
            pos = shape.free.pos
            if node not in pos:
                pos[node] = len(shape.free.items)
                shape.free.items.append(node)
            pos = shape.open.pos
            if node not in pos:
                pos[node] = len(shape.open.items)
                shape.open.items.append(node)
            if shape.keys:
                woken.add(shape)
        if node.keys:
            woken.add(node)

    # -- feasibility and placement ----------------------------------------
    def check_feasible(self, demand: dict[str, int], strategy: Any) -> None:
        if isinstance(strategy, NodeAffinity) and not strategy.soft:
            rank = self.by_id.get(strategy.node_id)
            if rank is None or not self.nodes[rank].alive:
                raise InfeasibleResourceError(
                    f"node affinity: no live node has id {strategy.node_id!r}; "
                    f"known nodes: {sorted(self.by_id)}")
            node = self.nodes[rank]
            if not node.fits_ever(demand):
                raise InfeasibleResourceError(infeasible_message(demand, [node]))
            return
        shape = self._shape(demand)
        if not shape.nodes:
            self._raise_infeasible(demand, shape)

    def _raise_infeasible(self, demand: dict[str, int], shape: _Shape) -> None:
        if shape.error is None:  # cached until a node joins or leaves
            shape.error = infeasible_message(demand, [n for n in self.nodes.values() if n.alive])
        raise InfeasibleResourceError(shape.error)

    def place(self, demand: dict[str, int], strategy: Any = "DEFAULT",
              preferred: Iterable[int] = (), depth: int = 1, strict: bool = False) -> int | None:
        """A rank with room for ``demand`` now, or None; raises if it can never fit.

        ``depth`` > 1 lets a node's queue of such tasks grow ``depth`` times deeper
        than usual (the GCS passes it for functions that run very briefly, so a
        node's queue still holds only a few milliseconds of work).  ``strict``: only a
        node with free capacity (an actor's creation: it must not queue behind
        another actor, which may never end).
        """
        if strict:
            depth = 1
        shape = self._shapes.get((tuple(demand.items()), depth)) or self._shape(demand, depth)
        if isinstance(strategy, NodeAffinity):
            rank = self.by_id.get(strategy.node_id)
            node = self.nodes.get(rank) if rank is not None else None
            if node is not None and node in shape.members:  # alive and could hold it
                if self._room(shape, node, strict):
                    return rank
                if not strategy.soft:
                    return None
            elif not strategy.soft:
                self.check_feasible(demand, strategy)
        for rank in preferred:
            node = self.nodes.get(rank)
            if node is not None and node in shape.members and self._room(shape, node, strict):
                return rank
        spread = strategy == "SPREAD"
        # first pass: a node with free capacity; second: a node whose queue may grow
        rank = self._pick(shape.free, shape.items, True, spread, depth)
        if rank is None:
            if not strict:
                rank = self._pick(shape.open, shape.items, False, spread, depth)
            if rank is None and not shape.nodes:
                self._raise_infeasible(demand, shape)
        return rank

    def _room(self, shape: _Shape, node: NodeState, strict: bool) -> bool:
        return node.room(shape.items, True) if strict else self._open(shape, node)

    @staticmethod
    def _open(shape: _Shape, node: NodeState) -> bool:
        """Whether ``node`` has room (pipelined) for ``shape``: the index answers most asks."""
        if node not in shape.open.pos:
            return False
        if node.room(shape.items, False, shape.depth):
            return True
        shape.open.remove(node)
        return False

    def _pick(self, cands: _Candidates, items: tuple, strict: bool, spread: bool,
              depth: int = 1) -> int | None:
        self._rr += 1
        pool = cands.items
        if not pool:
            return None
        if len(pool) == 1:  # common on a full cluster: the node that just had a release
            node = pool[0]
            if node.room(items, strict, depth):
                return node.rank
            cands.remove(node)
            return None
        if len(pool) <= EXACT_CANDIDATES or len(self.nodes) <= EXACT_NODES:
            return self._scan(cands, items, strict, spread, depth)
        best, best_key, tries = None, 0.0, SAMPLES
        if spread:  # round robin: the fewest tasks among the next few candidates with room
            i = cands.cursor
            while pool:
                if i >= len(pool):
                    i = 0
                node = pool[i]
                if not node.room(items, strict, depth):
                    cands.remove(node)  # the last candidate moves to i
                    continue
                i += 1
                key = node.ntasks
                if best is None or key < best_key:
                    best, best_key = node, key
                tries -= 1
                if not tries or not key:
                    break
            cands.cursor = i
            return None if best is None else best.rank
        rand = self._random
        while pool:
            node = pool[int(rand() * len(pool))]
            if not node.room(items, strict, depth):
                cands.remove(node)
                continue
            key = node.utilization()
            if best is None or key < best_key:
                best, best_key = node, key
            tries -= 1
            if not tries or not key:
                break
        return None if best is None else best.rank

    def _scan(self, cands: _Candidates, items: tuple, strict: bool, spread: bool,
              depth: int = 1) -> int | None:
        """Exact: the least loaded candidate with room, ties broken by a rotating index."""
        n, rr = len(self.nodes), self._rr
        best, best_key, full = None, None, []
        for node in cands.items:
            if not node.room(items, strict, depth):
                full.append(node)
                continue
            key = (node.ntasks if spread else node.utilization(), (node.index - rr) % n)
            if best_key is None or key < best_key:
                best, best_key = node, key
        for node in full:
            cands.remove(node)
        return None if best is None else best.rank

    # -- load accounting ---------------------------------------------------
    def acquire(self, rank: int, demand: dict[str, int], held: bool = False) -> None:
        """A task was sent to ``rank``; ``held``: an actor's creation (it keeps them)."""
        node = self.nodes[rank]
        if held:
            node.hold(demand, 1)
        node.ntasks += 1
        load = node.load
        for k, v in demand.items():
            load[k] = load.get(k, 0) + v

    def release(self, rank: int, demand: dict[str, int], task: bool = True, held: bool = False) -> None:
        """A task ended (``task=False``: only resources); ``held``: an actor held them."""
        node = self.nodes.get(rank)
        if node is None:
            return
        if held:
            node.hold(demand, -1)
        if task:
            node.ntasks -= 1
        load = node.load
        for k, v in demand.items():
            load[k] = load.get(k, 0) - v
        self._reopen(node)

    def block(self, rank: int, demand: dict[str, int]) -> None:
        """A task blocked in get(): its CPUs are free for others until it resumes."""
        cpu = demand.get("CPU", 0)
        node = self.nodes.get(rank)
        if node is not None:
            node.ntasks -= 1
            if cpu:
                node.load["CPU"] = node.load.get("CPU", 0) - cpu
            self._reopen(node)

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
        """Queue ``item`` under ``key`` (from ``shape``); it sleeps until a release may fit it."""
        q = self.queues.get(key)
        if q is None:
            q = self.queues[key] = deque()
            self._seq += 1
            self._register(key, self._seq)
        q.append(item)

    def _register(self, key: Any, seq: int) -> None:
        """Wake ``key`` when a node that could run its tasks has a release."""
        try:
            items, strategy = key
            demand = dict(items)
        except (TypeError, ValueError):  # not made by shape(): try it after every release
            holder: Any = self._always
        else:
            if isinstance(strategy, NodeAffinity) and not strategy.soft:
                holder = self.nodes.get(self.by_id.get(strategy.node_id, -1))
                if holder is None or not holder.alive:
                    self._wake_all = True  # placing it raises: let the caller see that
                    return
            else:
                holder = self._shape(demand)
        holder.keys.pop(key, None)  # a new queue for an old key: it moves to the end
        holder.keys[key] = seq

    def ready_keys(self) -> Iterator[Any]:
        """The queue keys, in queue order, whose head task may be placeable now.

        Only these need a ``place`` call after a release: any other queue's head
        found no room when last tried, and no node that could run it has had a
        release since.  Each call starts a new round.  Iterate at once, placing
        as you go: the iterator skips queues that the placements before them
        left without candidate nodes (their ``place`` would return None).
        """
        queues = self.queues
        if self._wake_all:
            self._wake_all = False
            self._woken.clear()
            for seq, key in enumerate(queues):
                self._register(key, seq - len(queues))
            return iter(list(queues))
        woken = list(self._woken)
        self._woken.clear()
        if self._always.keys:
            woken.append(self._always)
        if not woken:
            return iter(())
        return self._ready(woken)

    def _ready(self, woken: list) -> Iterator[Any]:
        """Merge the woken holders' keys by queue order, dropping a shape once it is used up."""
        queues = self.queues
        lists = [(src if isinstance(src, _Shape) else None, src, list(src.keys.items()))
                 for src in woken]
        heap = [(entries[0][1], j, 0) for j, (_, _, entries) in enumerate(lists) if entries]
        heapq.heapify(heap)
        while heap:
            _, j, pos = heap[0]
            shape, src, entries = lists[j]
            if (shape is not None and not shape.free.items and not shape.open.items
                    and not self._wake_all):
                heapq.heappop(heap)  # used up by the queues before: the rest would find no room
                continue
            key = entries[pos][0]
            if pos + 1 < len(entries):
                heapq.heapreplace(heap, (entries[pos + 1][1], j, pos + 1))
            else:
                heapq.heappop(heap)
            if key in queues:
                yield key
            elif src.keys.get(key) == entries[pos][1]:
                del src.keys[key]  # the caller dropped that queue

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

    # -- invariants (tests) ------------------------------------------------
    def validate(self) -> None:
        """Every node with room for an indexed demand is among that demand's candidates."""
        for (items, depth), shape in self._shapes.items():
            key, demand = items, dict(items)
            expect = [n for n in self.nodes.values() if n.alive and n.fits_ever(demand)]
            assert shape.nodes == expect, (key, [n.rank for n in shape.nodes])
            assert shape.members == set(expect), key
            for cands in (shape.free, shape.open):
                assert len(cands.items) == len(cands.pos)
                assert all(cands.items[i] is n for n, i in cands.pos.items())
            for n in shape.nodes:
                assert shape in n.shapes, (key, n.rank)
                if n.room(key, True, depth):
                    assert n in shape.free.pos, (key, n.rank, "has free capacity")
                if n.room(key, False, depth):
                    assert n in shape.open.pos, (key, n.rank, "has pipelined room")
