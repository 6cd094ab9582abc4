"""Cross-rank pull bandwidth: mpiray's pull against raw mpi4py RMA, in one run.

    python benchmarks/pull_bench.py [--sizes 1,100,1024] [--reps 3] [--rounds 3] [--warmup 1] [--out FILE]

(it launches ``mpiexec -n 3`` itself, ``--rounds`` times for mpiray and as many for raw
mpi4py, taking turns: a raw Get of 100 MiB here runs at ~9 GB/s in some launches and
~18 in others, steady within one; medians are over all samples of all rounds)

Ranks 1 and 2 are raylets; every rank is treated as its own host
(``MPIRAY_SHARE_HOST_MEMORY=0``), so objects move with MPI one-sided
operations.  Phase 1 times mpiray's two ways, taking turns: an object made on
rank 1 and read by the driver (``get``: rank 1 Puts it into rank 0's delivery
arena, one copy), and one read by a task on rank 2 (a pull: rank 1 Puts it
into rank 2's arena, whose workers map it, one copy; or, when it does not fit,
copies it into its staging window and rank 2 Gets it into its store).  The
task's column is timed from submit to the task's return, so it includes one
task round trip; the raylet's column is the pull alone, as rank 2 timed it
(from asking rank 1 for the bytes to their arrival: ``nodes()["RecentPulls"]``).
Phase 2 times raw mpi4py on the same ranks after mpiray shut down: a window
made with ``Win.Allocate`` on rank 1, ``Get`` by rank 2 (a) into a buffer
touched before (warm, the usual microbenchmark) and (b) into fresh memory, as
a pull must (its destination is a new object).
The first sample of each size in each launch is a warm-up, dropped alike in
every phase (``--warmup``): a raw Get's first destination is untouched
memory, and mpiray's first delivery lands in untouched pages of rank 0's
arena (~1 GB/s here: tmpfs allocates and zeroes each page on first write).
Prints a table and writes JSON lines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

os.environ.setdefault("MPIRAY_SHARE_HOST_MEMORY", "0")

import numpy as np  # noqa: E402

MiB = 1 << 20
# each mpiray sample starts from a quiet cluster, as each raw Get does: the previous
# sample's frees (files parked, 100 MiB mappings dropped on both ranks) otherwise overlap
# the next copy (a 100 MiB delivery ran at 8-16 GB/s right after a pull, 16-17 alone)
SETTLE = 0.05


def mpiray_phase(sizes: list[int], reps: int) -> dict[int, list[float]]:
    import mpiray as ray

    ray.init(num_cpus=1, object_store_memory=3 * max(sizes) + (256 << 20))
    nodes = {n["Rank"]: n["NodeID"] for n in ray.nodes()}
    on = {r: ray.NodeAffinitySchedulingStrategy(nodes[r]) for r in nodes}

    @ray.remote
    def make(n):
        return np.ones(n, dtype=np.uint8)

    @ray.remote
    def touch(x):
        return int(x[-1])

    out: dict[str, dict[int, list[float]]] = {"driver": {}, "task": {}, "raylet": {}}
    pulled: dict[int, list[str]] = {}
    for n in sizes:
        out["driver"][n], out["task"][n], pulled[n] = [], [], []
        for _ in range(reps):
            x = make.options(scheduling_strategy=on[1]).remote(n)
            ray.wait([x])
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            assert ray.get(x)[-1] == 1
            out["driver"][n].append(n / (time.perf_counter() - t0) / 1e9)
            del x
            x = make.options(scheduling_strategy=on[1]).remote(n)
            ray.wait([x])
            time.sleep(SETTLE)
            t0 = time.perf_counter()
            assert ray.get(touch.options(scheduling_strategy=on[2]).remote(x)) == 1
            out["task"][n].append(n / (time.perf_counter() - t0) / 1e9)
            pulled[n].append(x.id)
            del x
    time.sleep(1.5)  # rank 2 reports its pulls with its next heartbeat (every second)
    took = {p["ObjectID"]: p["Seconds"] for node in ray.nodes() if node["Rank"] == 2
            for p in node["RecentPulls"]}
    for n in sizes:
        out["raylet"][n] = [n / took[oid] / 1e9 for oid in pulled[n]]
    ray.shutdown()
    return out


def raw_phase(sizes: list[int], reps: int) -> dict[str, dict[int, list[float]]]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    res: dict[str, dict[int, list[float]]] = {"warm": {}, "fresh": {}}
    for n in sizes:
        win = MPI.Win.Allocate(n if comm.rank == 1 else 0, comm=comm)
        if comm.rank == 1:
            win.tomemory().cast("B")[:] = b"\1" * n
        win.Lock_all()
        comm.Barrier()
        if comm.rank == 2:
            warm = bytearray(n)
            for kind in ("warm", "fresh"):
                res[kind][n] = []
                for _ in range(reps):
                    dest = warm if kind == "warm" else np.empty(n, dtype=np.uint8)
                    t0 = time.perf_counter()
                    win.Get([dest, MPI.BYTE], 1, (0, n, MPI.BYTE))
                    win.Flush(1)
                    res[kind][n].append(n / (time.perf_counter() - t0) / 1e9)
        comm.Barrier()
        win.Unlock_all()
        win.Free()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,100,1024", help="MiB, comma separated")
    ap.add_argument("--reps", type=int, default=3, help="samples per size in each launch")
    ap.add_argument("--warmup", type=int, default=1,
                    help="samples per size and launch dropped before those (every phase alike)")
    ap.add_argument("--rounds", type=int, default=3, help="launches of each phase, taking turns")
    ap.add_argument("--out", default=None)
    ap.add_argument("--phase", choices=["mpiray", "raw"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) * MiB for s in args.sizes.split(",")]
    if args.phase == "mpiray":
        res = mpiray_phase(sizes, args.reps)  # only rank 0 gets here; raylets exit in init()
        print("RESULT " + json.dumps(res))
        return 0
    if args.phase == "raw":
        res = raw_phase(sizes, args.reps)
        from mpi4py import MPI

        if MPI.COMM_WORLD.rank == 2:
            print("RESULT " + json.dumps(res))
        return 0
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    ours: dict = {}
    raw: dict = {}
    for _ in range(args.rounds):  # the phases take turns: a raw Get's speed drifts between launches
        for phase, into in (("mpiray", ours), ("raw", raw)):
            cmd = [mpiexec, "-n", "3", sys.executable, __file__, "--phase", phase, "--sizes", args.sizes,
                   "--reps", str(args.reps + args.warmup)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
            if out.returncode != 0 or not line:
                sys.exit(f"{phase} phase failed:\n{out.stdout}\n{out.stderr}")
            for kind, by_size in json.loads(line[0][7:]).items():
                for n, values in by_size.items():
                    into.setdefault(kind, {}).setdefault(int(n), []).extend(values[args.warmup:])
    report(sizes, ours, raw, args.out)
    return 0


def report(sizes, ours, raw, out_path) -> None:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{'size':>9} {'driver get':>12} {'raylet pull':>12} {'task pull':>12} {'raw Get warm':>13} "
          f"{'raw Get fresh':>14} {'get/warm':>9} {'raylet/warm':>12} {'task/warm':>10}")
    rows = []
    for n in sizes:
        d, r, m, w, f = (statistics.median(x) for x in (ours["driver"][n], ours["raylet"][n], ours["task"][n],
                                                         raw["warm"][n], raw["fresh"][n]))
        print(f"{n >> 20:>6} MiB {d:>7.2f} GB/s {r:>7.2f} GB/s {m:>7.2f} GB/s {w:>8.2f} GB/s {f:>9.2f} GB/s "
              f"{d / w:>8.0%} {r / w:>11.0%} {m / w:>9.0%}")
        for system, value in (("mpiray-driver-get", d), ("mpiray-raylet-pull", r), ("mpiray", m),
                              ("mpi4py-rma-warm", w), ("mpi4py-rma-fresh", f)):
            rows.append({"system": system, "workload": f"pull_{n >> 20}MiB", "value": value, "unit": "GB/s",
                         "ranks": 3, "host": socket.gethostname(), "git": sha,
                         "date": time.strftime("%Y-%m-%dT%H:%M:%S")})
    if out_path:
        with open(out_path, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    sys.exit(main())
