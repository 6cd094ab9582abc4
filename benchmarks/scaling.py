"""Strong and weak scaling of task-parallel workloads over 1..N raylet ranks.

    python benchmarks/scaling.py [--nodes 1,2,4] [--launch embedded|mpiexec|srun]
                                 [--task sleep|busy] [--out scaling.jsonl] [--plot scaling.png]

For each k in ``--nodes`` a fresh cluster with k raylet ranks (``--cpus-per-node``
CPUs each) runs, ``--reps`` times:

* ``tasks``: 10 ms tasks (``--task sleep`` scales past the cores; ``busy`` spins);
* ``map_reduce``: maps that each build and transform a numpy array
  (``--array-mib``), then one reduce summing all of them.

Strong scaling keeps the total work fixed; weak scaling gives every raylet CPU
the same work.  Efficiency: strong T(1)/(k T(k)), weak T(1)/T(k).  Output: JSON
lines, a table, and a PNG (needs matplotlib, the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

SCENARIOS = [
    ("tasks", "strong"),
    ("tasks", "weak"),
    ("map_reduce", "strong"),
    ("map_reduce", "weak"),
]


def child_command(k: int, launch: str, child_args: list[str]) -> list[str]:
    """The command that runs one k-raylet cluster (a pure function: data, not a process)."""
    me = [sys.executable, os.path.abspath(__file__), "--child", str(k), *child_args]
    if launch == "embedded":
        return me
    if launch == "mpiexec":
        near = os.path.join(os.path.dirname(sys.executable), "mpiexec")
        mpiexec = near if os.access(near, os.X_OK) else (shutil.which("mpiexec") or "mpiexec")
        return [mpiexec, "-n", str(k + 1), *me]
    if launch == "srun":  # one raylet per node; the driver shares the first node
        return [
            "srun",
            f"--nodes={k}",
            f"--ntasks={k + 1}",
            "--overcommit",
            "--kill-on-bad-exit=1",
            *me,
        ]
    raise ValueError(f"--launch {launch!r}: expected embedded, mpiexec or srun")


def sizes(workload: str, mode: str, k: int, cpus: int, args) -> int:
    per_cpu = args.tasks_per_cpu if workload == "tasks" else args.maps_per_cpu
    return per_cpu * cpus * (k if mode == "weak" else max(args.nodes_list))


def run_child(args) -> None:
    """Inside one cluster: time every scenario ``--reps`` times, print JSON lines."""
    import numpy as np

    import mpiray

    k = args.child
    if args.launched:
        mpiray.init(num_cpus=args.cpus_per_node)
    else:
        mpiray.init(num_nodes=k, num_cpus=args.cpus_per_node)
    kind, n_elems = args.task, args.array_mib * 2**20 // 8

    @mpiray.remote
    def work():
        if kind == "sleep":
            time.sleep(0.01)
        else:
            end = time.perf_counter() + 0.01
            while time.perf_counter() < end:
                pass

    @mpiray.remote
    def make(i):
        a = np.arange(n_elems, dtype=np.float64) + i
        return np.sqrt(a * a + 1.0)

    @mpiray.remote
    def total(*arrays):
        out = np.zeros(n_elems)
        for a in arrays:
            out += a
        return float(out.sum())

    mpiray.get([work.remote() for _ in range(4 * k * args.cpus_per_node)])  # workers up
    for workload, mode in SCENARIOS:
        n = sizes(workload, mode, k, args.cpus_per_node, args)
        samples = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            if workload == "tasks":
                mpiray.get([work.remote() for _ in range(n)])
            else:
                mpiray.get(total.remote(*[make.remote(i) for i in range(n)]))
            samples.append(time.perf_counter() - t0)
        print(
            "SCALING "
            + json.dumps({"workload": workload, "mode": mode, "k": k, "n": n, "seconds": samples}),
            flush=True,
        )
    mpiray.shutdown()


def efficiency(rows: list[dict]) -> None:
    """Add speedup/efficiency relative to the smallest k of each scenario (in place)."""
    for workload, mode in SCENARIOS:
        group = sorted(
            (r for r in rows if (r["workload"], r["mode"]) == (workload, mode)),
            key=lambda r: r["k"],
        )
        if not group:
            continue
        base = group[0]
        for r in group:
            ratio = base["median_s"] / r["median_s"]
            r["speedup"] = ratio * (r["n"] / base["n"])
            r["efficiency"] = r["speedup"] / (r["k"] / base["k"])


def plot(rows: list[dict], path: str, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'mpiray[bench]'): no plot"
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for workload, mode in SCENARIOS:
        g = sorted(
            (r for r in rows if (r["workload"], r["mode"]) == (workload, mode)),
            key=lambda r: r["k"],
        )
        ks = [r["k"] for r in g]
        label = f"{workload} ({mode})"
        axes[0 if mode == "strong" else 1].plot(ks, [r["median_s"] for r in g], "o-", label=label)
        axes[2].plot(ks, [r["efficiency"] for r in g], "o-", label=label)
    if rows:
        ks = sorted({r["k"] for r in rows})
        axes[2].plot(ks, [1.0] * len(ks), "k:", label="ideal")
    for ax, t, y in zip(
        axes,
        ["strong scaling", "weak scaling", "parallel efficiency"],
        ["seconds (median)", "seconds (median)", "efficiency"],
    ):
        ax.set_title(t)
        ax.set_xlabel("raylet ranks")
        ax.set_ylabel(y)
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=8)
    axes[2].set_ylim(0, max([1.2] + [1.1 * r["efficiency"] for r in rows]))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", default="1,2", help="comma list of raylet counts k")
    p.add_argument("--launch", default="embedded", choices=["embedded", "mpiexec", "srun"])
    p.add_argument("--cpus-per-node", type=int, default=1)
    p.add_argument("--task", default="sleep", choices=["sleep", "busy"])
    p.add_argument("--tasks-per-cpu", type=int, default=100)
    p.add_argument("--maps-per-cpu", type=int, default=16)
    p.add_argument("--array-mib", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument("--plot", default=None, help="write a PNG here")
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--launched", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.nodes_list = [int(x) for x in args.nodes.split(",")]
    if args.child:
        run_child(args)
        return 0
    child_args = [
        "--nodes",
        args.nodes,
        "--cpus-per-node",
        str(args.cpus_per_node),
        "--task",
        args.task,
        "--tasks-per-cpu",
        str(args.tasks_per_cpu),
        "--maps-per-cpu",
        str(args.maps_per_cpu),
        "--array-mib",
        str(args.array_mib),
        "--reps",
        str(args.reps),
    ] + (["--launched"] if args.launch != "embedded" else [])
    rows, date = [], time.strftime("%Y-%m-%dT%H:%M:%S%z")
    sha = (
        subprocess.run(
            [
                "git",
                "-C",
                os.path.dirname(os.path.abspath(__file__)),
                "rev-parse",
                "--short",
                "HEAD",
            ],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.strip()
        or None
    )
    for k in args.nodes_list:
        proc = subprocess.run(
            child_command(k, args.launch, child_args),
            capture_output=True,
            check=False,
            text=True,
            timeout=900,
        )
        if proc.returncode:
            print(
                f"k={k} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
            return 1
        for line in proc.stdout.splitlines():
            if line.startswith("SCALING "):
                r = json.loads(line[8:])
                rows.append(
                    {
                        **r,
                        "median_s": statistics.median(r["seconds"]),
                        "launch": args.launch,
                        "task": args.task,
                        "cpus_per_node": args.cpus_per_node,
                        "date": date,
                        "host": os.uname().nodename,
                        "git_sha": sha,
                    }
                )
    rows.sort(key=lambda r: (SCENARIOS.index((r["workload"], r["mode"])), r["k"]))
    efficiency(rows)
    print(
        f"{'workload':<11} {'mode':<7} {'k':>3} {'n':>6} {'median s':>9} {'speedup':>8} {'eff':>6}"
    )
    for r in rows:
        print(
            f"{r['workload']:<11} {r['mode']:<7} {r['k']:>3} {r['n']:>6} {r['median_s']:>9.3f} "
            f"{r['speedup']:>8.2f} {r['efficiency']:>6.2f}"
        )
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    if args.plot:
        note = plot(
            rows,
            args.plot,
            f"mpiray scaling: {args.task} tasks, {args.launch}, "
            f"{args.cpus_per_node} CPU(s) per raylet",
        )
        print(note or f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
