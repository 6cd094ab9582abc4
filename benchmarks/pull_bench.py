"""Cross-rank pull bandwidth: mpiray's pull against raw mpi4py RMA, in one run.

    python benchmarks/pull_bench.py [--sizes 1,100,1024] [--reps 4] [--rounds 3] [--warmup 1] [--out FILE]

(it launches ``mpiexec -n 3`` itself ``--rounds`` times; medians are over all samples of
all rounds)

Ranks 1 and 2 are raylets; every rank is treated as its own host
(``MPIRAY_SHARE_HOST_MEMORY=0``), so objects move with MPI one-sided
operations.  Each sample of a size takes four readings in turn, in the same
launch, so that drift of the machine's memory bandwidth (a 100 MiB copy here
runs at 6-20 GB/s, from one minute to the next and between launches) falls on
all of them alike:

* **raw Get warm / fresh**: before ``init``, rank 1 exposes a ``Win.Allocate``
  window with mpi4py; rank 0 ``Get``s from it (a) into a buffer touched before
  (warm, the usual microbenchmark) and (b) into fresh memory, as a pull must
  (its destination is a new object).
* **driver get**: ``ray.get(x)`` on rank 0 of an object made on rank 1 (rank 1
  Puts it into rank 0's delivery arena, one copy).
* **task pull**: a task on rank 2 reads an object made on rank 1 (rank 1 Puts
  it into rank 2's arena, whose workers map it, one copy; or, when it does
  not fit, copies it into its staging window and rank 2 Gets it into its
  store).  Timed from submit to the task's return, so it includes one task
  round trip.  The **raylet pull** column is the pull alone, as rank 2 timed
  it (from asking rank 1 for the bytes to their arrival:
  ``nodes()["RecentPulls"]``).

The first sample of each size in each launch is a warm-up, dropped alike for
every column (``--warmup``): mpiray's first delivery lands in untouched pages
of an arena (~1 GB/s here: tmpfs allocates and zeroes each page on first
write).  Prints a table and writes JSON lines.
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


def raw_window(sizes: list[int]):
    """Before ``init``, on every rank: rank 1 exposes the largest size for raw Gets."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    n = max(sizes)
    win = MPI.Win.Allocate(n if comm.rank == 1 else 0, comm=comm)
    if comm.rank == 1:
        np.frombuffer(win.tomemory(), dtype=np.uint8)[:] = 1
    comm.Barrier()
    if comm.rank == 0:
        win.Lock_all()
    # never freed: freeing is collective and the raylets do not come back from init;
    # MPI releases it when the ranks end
    return win


def raw_get(win, dest) -> float:
    from mpi4py import MPI

    t0 = time.perf_counter()
    win.Get([dest, MPI.BYTE], 1, (0, len(dest), MPI.BYTE))
    win.Flush(1)
    took = time.perf_counter() - t0
    assert dest[-1] == 1
    return len(dest) / took / 1e9


def mpiray_phase(sizes: list[int], reps: int) -> dict[str, dict[int, list[float]]]:
    win = raw_window(sizes)
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

    out: dict[str, dict[int, list[float]]] = {k: {} for k in ("driver", "task", "raylet", "warm", "fresh")}
    pulled: dict[int, list[str]] = {}
    for n in sizes:
        for k in out:
            out[k][n] = []
        pulled[n] = []
        warm = np.ones(n, dtype=np.uint8)
        for _ in range(reps):
            time.sleep(SETTLE)
            out["warm"][n].append(raw_get(win, warm))
            time.sleep(SETTLE)
            out["fresh"][n].append(raw_get(win, np.empty(n, dtype=np.uint8)))
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
        del warm
    time.sleep(1.5)  # rank 2 reports its pulls with its next heartbeat (every second)
    took = {p["ObjectID"]: p["Seconds"] for node in ray.nodes() if node["Rank"] == 2
            for p in node["RecentPulls"]}
    for n in sizes:
        out["raylet"][n] = [n / took[oid] / 1e9 for oid in pulled[n]]
    ray.shutdown()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,100,1024", help="MiB, comma separated")
    ap.add_argument("--reps", type=int, default=3, help="samples per size in each launch")
    ap.add_argument("--warmup", type=int, default=1,
                    help="samples per size and launch dropped before those (every phase alike)")
    ap.add_argument("--rounds", type=int, default=3, help="launches (mpiexec -n 3)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--phase", choices=["mpiray"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) * MiB for s in args.sizes.split(",")]
    if args.phase:
        res = mpiray_phase(sizes, args.reps)  # only rank 0 gets here; raylets exit in init()
        print("RESULT " + json.dumps(res))
        return 0
    ours = measure(args.sizes, args.reps, args.rounds, args.warmup)
    report(sizes, ours, args.out)
    return 0


def measure(sizes: str, reps: int, rounds: int, warmup: int = 1,
            timeout: float = 900) -> dict[str, dict[int, list[float]]]:
    """``rounds`` launches of ``mpiexec -n 3`` (``sizes``: MiB, comma separated); the samples
    of every column (GB/s), warm-ups dropped: {"driver"|"raylet"|"task"|"warm"|"fresh":
    {nbytes: [...]}}."""
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    ours: dict = {}
    for _ in range(rounds):
        cmd = [mpiexec, "-n", "3", sys.executable, os.path.abspath(__file__), "--phase", "mpiray",
               "--sizes", sizes, "--reps", str(reps + warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if out.returncode != 0 or not line:
            raise RuntimeError(f"pull benchmark failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
        for kind, by_size in json.loads(line[0][7:]).items():
            for n, values in by_size.items():
                ours.setdefault(kind, {}).setdefault(int(n), []).extend(values[warmup:])
    return ours


def report(sizes, ours, out_path) -> None:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"{'size':>9} {'driver get':>12} {'raylet pull':>12} {'task pull':>12} {'raw Get warm':>13} "
          f"{'raw Get fresh':>14} {'get/warm':>9} {'raylet/warm':>12} {'task/warm':>10}")
    rows = []
    for n in sizes:
        d, r, m, w, f = (statistics.median(x) for x in (ours["driver"][n], ours["raylet"][n], ours["task"][n],
                                                         ours["warm"][n], ours["fresh"][n]))
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
