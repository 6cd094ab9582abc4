"""One system, one subprocess: ``python _runner.py SYSTEM MODE [options]``.

MODE ``lifecycle`` times start-up to the first result, idle memory/CPU and
shutdown in this fresh process; MODE ``workloads`` runs the repeated
workloads.  Results go to stdout as lines ``BENCH {json}``; run.py adds the
metadata.  Only numpy (and psutil, if present) besides the system itself, so
it also runs in a separate Ray virtual environment.
"""

from __future__ import annotations

import time

T_START = time.time()

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _procs
import _workloads


def emit(**record) -> None:
    print("BENCH " + json.dumps(record), flush=True)


class System:
    """Start/stop a system and expose what the workloads need."""

    def __init__(self, name: str, launched: bool):
        self.name, self.launched = name, launched
        self.ranks = None
        self.executor = None

    def start(self) -> None:
        if self.name == "mpiray":
            import mpiray as api

            info = api.init(num_cpus=2)
            self.ranks = int(info.get("num_nodes", 1)) + 1
        elif self.name == "ray":
            import ray as api

            api.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
        else:
            import mpi4py as api
            from mpi4py.futures import MPIPoolExecutor

            here = os.path.dirname(os.path.abspath(__file__))
            self.executor = MPIPoolExecutor(path=[here])  # the job's other ranks
            from mpi4py import MPI

            self.ranks = MPI.COMM_WORLD.Get_size()
        self.api = api
        self.version = getattr(api, "__version__", "?")

    def first_result(self) -> None:
        if self.executor is not None:
            import _mpi4py_futures as m

            self.executor.submit(m.noop).result()
        else:
            self.tasks = _workloads.make_tasks(self.api)
            self.api.get(self.tasks.noop.remote())

    def stop(self) -> None:
        if self.executor is not None:
            self.executor.shutdown()
        else:
            self.api.shutdown()

    def run(self, name: str, size: int) -> float:
        if self.executor is not None:
            import _mpi4py_futures as m

            return m.WORKLOADS[name](self.executor, size)
        return _workloads.REGISTRY[name][1](self.api, self.tasks, size)

    def supports(self, name: str) -> bool:
        if self.executor is not None:
            import _mpi4py_futures as m

            return name in m.WORKLOADS
        return name in _workloads.REGISTRY


def lifecycle(sysm: System, args) -> None:
    t_import = time.time()
    sysm.start()
    t_init = time.time()
    sysm.first_result()
    t_first = time.time()
    spawn = args.t_spawn or T_START
    time.sleep(args.settle)
    root = _procs.launcher_root(os.getpid()) if sysm.launched else os.getpid()
    idle = _procs.idle_usage(root, args.idle_window)
    before = set(_procs.tree(os.getpid())) - {os.getpid()}
    t0 = time.perf_counter()
    sysm.stop()
    t_shutdown = time.perf_counter() - t0
    deadline = time.time() + args.leftover_wait
    while time.time() < deadline and set(_procs.tree(os.getpid())) - {os.getpid()} & before:
        time.sleep(0.05)
    leftover = len((set(_procs.tree(os.getpid())) - {os.getpid()}) & before)
    common = {"version": sysm.version, "ranks": sysm.ranks}
    emit(
        workload="startup_to_first_result",
        seconds=t_first - spawn,
        **common,
        extra={
            "python_start_s": round(T_START - spawn, 4) if args.t_spawn else None,
            "import_s": round(t_import - T_START, 4),
            "init_s": round(t_init - t_import, 4),
            "init_to_first_result_s": round(t_first - t_init, 4),
        },
    )
    emit(
        workload="shutdown",
        seconds=t_shutdown,
        **common,
        extra={"processes_left_after_wait": leftover, "wait_s": args.leftover_wait},
    )
    emit(
        workload="idle_cluster_rss",
        seconds=idle["rss_mib"],
        **common,
        extra={
            "pss_mib": round(idle["pss_mib"], 1),
            "processes": idle["processes"],
            "window_s": args.idle_window,
        },
    )
    emit(
        workload="idle_cluster_cpu",
        seconds=idle["cpu_pct"],
        **common,
        extra={"window_s": args.idle_window},
    )


def workloads(sysm: System, args) -> None:
    sysm.start()
    sysm.first_result()
    for name in args.workloads.split(","):
        if not sysm.supports(name):
            continue
        w = _workloads.REGISTRY[name][0]
        size = w.quick if args.quick else w.full
        sysm.run(name, w.quick)  # warm-up: workers, imports, caches
        samples = [_workloads.value(w, sysm.run(name, size), size) for _ in range(args.reps)]
        emit(workload=name, values=samples, size=size, version=sysm.version, ranks=sysm.ranks)
    sysm.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["mpiray", "ray", "mpi4py.futures"])
    p.add_argument("mode", choices=["lifecycle", "workloads"])
    p.add_argument("--launched", action="store_true", help="started by mpiexec (mpiray)")
    p.add_argument("--workloads", default=",".join(_workloads.REGISTRY))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--t-spawn", type=float, default=0.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--idle-window", type=float, default=3.0)
    p.add_argument(
        "--leftover-wait",
        type=float,
        default=10.0,
        help="how long to wait for the cluster's processes to exit after shutdown",
    )
    args = p.parse_args()
    sysm = System(args.system, args.launched)
    (lifecycle if args.mode == "lifecycle" else workloads)(sysm, args)


if __name__ == "__main__":
    main()
