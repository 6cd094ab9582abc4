"""Global scheduler benchmark: placement throughput at cluster scale, no MPI.

    python benchmarks/scheduler_bench.py [--quick] [--nodes N] [--tasks N] [--seed S]
                                         [--pipeline P] [--drain ready|all]
                                         [--tracemalloc] [--out PATH]

Drives ``mpiray._control.scheduler.GlobalScheduler`` the way the GCS does, on a
simulated cluster and clock:

    tasks (pre-drawn) ──place()──► rank ──acquire()──► in flight (min-heap of finish times)
         │ None                                              │ earliest finishes
         ▼                                                   ▼
    enqueue(shape) ◄──── drain the queues after each ───── release()
                         completion, like GCS._drain_queues

New tasks are submitted while fewer than ``backlog`` wait in the queues, so the
cluster stays full: most placements happen right after a release.  The drain
tries the queues that ``ready_keys()`` names (``--drain ready``, default) or,
like a GCS that does not use it, every queue (``--drain all``: one ``place``
call per queue per completion, most of them finding no room).  The default cluster has 1,000 nodes: 80% CPU-only
(32-128 CPUs, 2-8 GiB per CPU), 20% GPU nodes (4-8 GPUs), 10% of them with a
custom ``nvme`` resource.  The task mix: 1 CPU, 0.5 CPU, 4 CPUs + 16 GiB,
1 GPU, 0.25 GPU, nvme, with some SPREAD, node affinity (hard and soft) and
locality preferences.

Throughput is placements (successful ``place()`` calls) per second of time
spent inside scheduler calls; wall time covers the whole simulation.  The run
is written (merged by mode) into ``benchmarks/results/scheduler.json``.
"""

from __future__ import annotations

import argparse
import datetime
import heapq
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import time
import tracemalloc

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from mpiray._control.scheduler import GlobalScheduler  # noqa: E402
from mpiray._options import UNIT, NodeAffinity  # noqa: E402

GIB = 1 << 30
OUT = os.path.join(HERE, "results", "scheduler.json")

# (name, weight, demand in whole units, relative duration)
TASK_SHAPES = [
    ("cpu1", 0.50, {"CPU": 1}, 1.0),
    ("cpu0.5", 0.20, {"CPU": 0.5}, 1.0),
    ("cpu4_mem16g", 0.17, {"CPU": 4, "memory": 16 * GIB}, 1.0),
    ("gpu1", 0.02, {"CPU": 1, "GPU": 1}, 0.8),
    ("gpu0.25", 0.03, {"CPU": 1, "GPU": 0.25}, 0.8),
    ("nvme", 0.005, {"CPU": 1, "nvme": 0.25}, 1.0),
    ("zero_cpu", 0.075, {}, 0.5),
]
SPREAD_FRACTION = 0.02
AFFINITY_FRACTION = 0.01  # half hard, half soft, to a few "service" nodes
LOCALITY_FRACTION = 0.10  # prefer the node a recent task ran on
AFFINITY_TARGETS = 16


def units(d: dict) -> dict[str, int]:
    return {k: int(round(v * UNIT)) for k, v in d.items()}


def make_cluster(n: int, rng: random.Random) -> list[tuple[int, str, dict[str, int]]]:
    nodes = []
    for rank in range(1, n + 1):
        if rng.random() < 0.2:
            gpus = rng.randint(4, 8)
            cpus = rng.choice([32, 48, 64])
            res = {"CPU": cpus, "GPU": gpus, "memory": rng.choice([256, 384, 512]) * GIB}
        else:
            cpus = rng.choice([32, 48, 64, 96, 128])
            res = {"CPU": cpus, "GPU": 0, "memory": cpus * rng.choice([2, 4, 8]) * GIB}
        if rng.random() < 0.1:
            res["nvme"] = 1
        nodes.append((rank, f"node{rank:05d}", units(res)))
    return nodes


def make_tasks(n: int, nodes: list, rng: random.Random) -> list[tuple]:
    """(demand, strategy, wants locality, duration) per task; demands shared per shape."""
    shapes = [(units(d), dur) for _, _, d, dur in TASK_SHAPES]
    weights = [w for _, w, _, _ in TASK_SHAPES]
    services = rng.sample(nodes, min(AFFINITY_TARGETS, len(nodes)))
    # affinity targets per shape: the service nodes that can run it (hard affinity must be feasible)
    fitting = [[nid for _, nid, total in services
                if all(total.get(k, 0) >= v for k, v in demand.items())] for demand, _ in shapes]
    hard = {nid: NodeAffinity(nid) for _, nid, _ in services}
    soft = {nid: NodeAffinity(nid, soft=True) for _, nid, _ in services}
    picks = rng.choices(range(len(shapes)), weights, k=n)
    tasks = []
    for i in range(n):
        demand, dur = shapes[picks[i]]
        x = rng.random()
        if x < SPREAD_FRACTION:
            strategy = "SPREAD"
        elif x < SPREAD_FRACTION + AFFINITY_FRACTION and fitting[picks[i]]:
            t = rng.choice(fitting[picks[i]])
            strategy = hard[t] if rng.random() < 0.5 else soft[t]
        else:
            strategy = "DEFAULT"
        tasks.append((demand, strategy, rng.random() < LOCALITY_FRACTION,
                      dur * rng.uniform(0.5, 1.5)))
    return tasks


def simulate(nodes: list, tasks: list, pipeline: float, backlog: int, drain: str) -> dict:
    sched = GlobalScheduler(pipeline)
    for rank, node_id, total in nodes:
        sched.add_node(rank, node_id, total)
    place, acquire, release = sched.place, sched.acquire, sched.release
    enqueue, shape, queues = sched.enqueue, sched.shape, sched.queues
    ready_keys = getattr(sched, "ready_keys", None) if drain == "ready" else None
    if drain == "ready" and ready_keys is None:
        raise SystemExit("--drain ready: this scheduler has no ready_keys(); use --drain all")
    clock = time.perf_counter
    heap: list[tuple] = []  # (finish time, seq, rank, task index)
    recent = [nodes[0][0]] * 64  # ranks recent tasks ran on: locality targets
    now = 0.0
    seq = placed = calls = misses = queued = max_queued = max_running = 0
    in_sched = in_drain_keys = 0.0
    n = len(tasks)
    nxt = 0
    wall0 = clock()
    while nxt < n or heap:
        # submit new tasks, as GCS._make_ready does: place at once, else wait in the queue
        while nxt < n and queued < backlog:
            demand, strategy, local, dur = tasks[nxt]
            preferred = (recent[nxt & 63],) if local else ()
            t0 = clock()
            rank = place(demand, strategy, preferred)
            if rank is None:
                enqueue(shape(demand, strategy), nxt)
            else:
                acquire(rank, demand)
            in_sched += clock() - t0
            calls += 1
            if rank is None:
                misses += 1
                queued += 1
            else:
                placed += 1
                recent[nxt & 63] = rank
                seq += 1
                heapq.heappush(heap, (now + dur, seq, rank, nxt))
            nxt += 1
        if len(heap) > max_running:
            max_running = len(heap)
        max_queued = max(max_queued, queued)
        if not heap:
            if queued:
                raise RuntimeError(f"{queued} tasks queued with nothing running: lost capacity")
            continue
        # the earliest task finishes: release, then drain the queues as GCS._drain_queues does
        now, _, rank, i = heapq.heappop(heap)
        t0 = clock()
        release(rank, tasks[i][0])
        keys = ready_keys() if ready_keys is not None else iter(list(queues))
        t1 = clock()
        in_sched += t1 - t0
        in_drain_keys += t1 - t0
        while True:
            t0 = clock()
            key = next(keys, None)  # ready_keys() skips used-up queues as it goes
            t1 = clock()
            in_sched += t1 - t0
            in_drain_keys += t1 - t0
            if key is None:
                break
            q = queues[key]
            while q:
                i = q[0]
                demand, strategy = tasks[i][0], tasks[i][1]
                t0 = clock()
                rank = place(demand, strategy)
                if rank is not None:
                    acquire(rank, demand)
                in_sched += clock() - t0
                calls += 1
                if rank is None:
                    misses += 1
                    break
                q.popleft()
                queued -= 1
                placed += 1
                seq += 1
                heapq.heappush(heap, (now + tasks[i][3], seq, rank, i))
            if not q:
                del queues[key]
    wall = clock() - wall0
    leftover = [(r, nd.ntasks, {k: v for k, v in nd.load.items() if v})
                for r, nd in sched.nodes.items() if nd.ntasks or any(nd.load.values())]
    if leftover:
        raise RuntimeError(f"load left after every task finished: {leftover[:5]}")
    return {"placements": placed, "place_calls": calls, "place_none": misses,
            "scheduler_s": round(in_sched, 3), "release_and_keys_s": round(in_drain_keys, 3),
            "wall_s": round(wall, 3),
            "placements_per_s": round(placed / in_sched), "placements_per_wall_s": round(placed / wall),
            "us_per_placement": round(in_sched / placed * 1e6, 2),
            "max_in_flight": max_running, "max_queued": max_queued, "sim_time": round(now, 1)}


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 nodes, 50,000 tasks")
    p.add_argument("--nodes", type=int, help="simulated nodes (default 1,000)")
    p.add_argument("--tasks", type=int, help="tasks to run (default 1,000,000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pipeline", type=float, default=2.0)
    p.add_argument("--backlog", type=int, help="queued tasks before submission pauses")
    p.add_argument("--drain", choices=["ready", "all"], default="ready",
                   help="after each release try the queues from ready_keys() (default) or every "
                        "queue, as a GCS that ignores ready_keys() does")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also trace Python allocations (much slower; peak of the simulation)")
    p.add_argument("--out", default=OUT, help="JSON file to merge this run into ('-': none)")
    p.add_argument("--mode", help="key of this run in the JSON file (default: quick or full)")
    args = p.parse_args(argv)
    nnodes = args.nodes or (100 if args.quick else 1_000)
    ntasks = args.tasks or (50_000 if args.quick else 1_000_000)
    backlog = args.backlog or max(100, nnodes * 2)
    mode = args.mode or ("quick" if args.quick else "full") + ("" if args.drain == "ready" else
                                                                "-drain-all")

    rng = random.Random(args.seed)
    nodes = make_cluster(nnodes, rng)
    tasks = make_tasks(ntasks, nodes, rng)
    setup_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # cluster + task list
    if args.tracemalloc:
        tracemalloc.start()
    res = simulate(nodes, tasks, args.pipeline, backlog, args.drain)
    if args.tracemalloc:
        res["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        tracemalloc.stop()
    res["maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    res["maxrss_before_simulation_mib"] = round(setup_rss, 1)
    record = {
        "benchmark": "scheduler", "mode": mode,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(), "git_sha": git_sha(),
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "config": {"nodes": nnodes, "tasks": ntasks, "seed": args.seed,
                   "pipeline": args.pipeline, "backlog": backlog, "drain": args.drain,
                   "tracemalloc": args.tracemalloc,
                   "gpu_nodes": sum(1 for _, _, t in nodes if t.get("GPU")),
                   "nvme_nodes": sum(1 for _, _, t in nodes if "nvme" in t)},
        "results": res,
    }
    print(f"{nnodes} nodes, {ntasks:,} tasks: {res['placements_per_s']:,} placements/s in "
          f"scheduler calls ({res['us_per_placement']} us each), "
          f"{res['placements_per_wall_s']:,}/s wall ({res['wall_s']} s), "
          f"{res['place_none']:,} of {res['place_calls']:,} place() calls found no room, "
          f"peak {res['max_in_flight']:,} in flight and {res['max_queued']:,} queued, "
          f"maxrss {res['maxrss_mib']} MiB ({res['maxrss_before_simulation_mib']} before the "
          "simulation)" + (f", traced peak {res['tracemalloc_peak_mib']} MiB"
                           if args.tracemalloc else ""))
    if args.out != "-":
        data = {}
        if os.path.exists(args.out):
            with open(args.out) as f:
                try:
                    data = json.load(f)
                except ValueError:
                    data = {}
        data[mode] = record
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
