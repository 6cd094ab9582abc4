"""Run the benchmark workloads on mpiray and, when available, on Ray and mpi4py.futures.

    python benchmarks/run.py [--quick] [--systems mpiray,ray,mpi4py.futures]
                             [--workloads NAME,...] [--out results.jsonl]
                             [--ray-python PATH]

Each system runs in its own subprocesses, one after the other: one fresh
process per repetition of the lifecycle figures (start-up, idle, shutdown),
and one process for the repeated workloads.  Ray runs only inside a
loopback-only network namespace (``unshare -n``, needs root).  Output: JSON
lines appended to ``--out`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _workloads

RUNNER = os.path.join(HERE, "_runner.py")
SYSTEMS = ["mpiray", "mpiray-mpiexec", "ray", "mpi4py.futures"]
DEFAULT_SYSTEMS = "mpiray,ray,mpi4py.futures"
MPI4PY_WORKLOADS = {
    "single_client_tasks_async",
    "single_client_tasks_sync",
    "chain_of_tasks",
    "map_reduce",
}


def _mpiexec() -> str | None:
    near = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return near if os.access(near, os.X_OK) else shutil.which("mpiexec")


def command(
    system: str, mode: str, runner_args: list[str], ray_python: str | None
) -> list[str] | str:
    """The command line for one runner subprocess, or a string saying why it cannot run."""
    if system == "mpiray":
        return [sys.executable, RUNNER, "mpiray", mode, *runner_args]
    if system in ("mpiray-mpiexec", "mpi4py.futures"):
        mpiexec = _mpiexec()
        if mpiexec is None:
            return "no mpiexec found"
        if system == "mpiray-mpiexec":
            ranks, entry, name = "2", [RUNNER], "mpiray"
        else:  # spawn mode fails with the MPICH wheel: use launched mode
            ranks, entry, name = "3", ["-m", "mpi4py.futures", RUNNER], "mpi4py.futures"
        return [mpiexec, "-n", ranks, sys.executable, *entry, name, mode, "--launched", *runner_args]
    if not ray_python:
        return "no --ray-python (or MPIRAY_BENCH_RAY_PYTHON) given"
    if subprocess.run(
        [ray_python, "-c", "import ray, numpy"], capture_output=True, check=False
    ).returncode:
        return f"{ray_python} cannot import ray and numpy"
    if (
        not shutil.which("unshare")
        or subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode
    ):
        return "`unshare -n` is not available (needs root): Ray runs only without network"
    return [
        "unshare",
        "-n",
        "sh",
        "-c",
        'ip link set lo up && exec "$0" "$@"',
        ray_python,
        RUNNER,
        "ray",
        mode,
        *runner_args,
    ]


def run_one(cmd: list[str], timeout: float) -> tuple[list[dict], str]:
    """Run a runner subprocess; its BENCH records, and its tail of output if it failed."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
    cmd = [c.replace("@T_SPAWN@", repr(time.time())) for c in cmd]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        return _records(out), f"timed out after {timeout:.0f} s\n" + out[-2000:]
    failed = "" if proc.returncode == 0 else f"exit code {proc.returncode}\n{out[-2000:]}"
    return _records(out), failed


def _records(out: str) -> list[dict]:
    return [json.loads(line[6:]) for line in out.splitlines() if line.startswith("BENCH ")]


def metadata() -> dict:
    try:
        sha = (
            subprocess.run(
                ["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                capture_output=True,
                check=False,
                text=True,
            ).stdout.strip()
            or None
        )
    except OSError:
        sha = None
    model = platform.processor() or None
    try:
        with open("/proc/cpuinfo") as f:
            model = next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    if sha:
        dirty = subprocess.run(
            ["git", "-C", HERE, "status", "--porcelain", "--", "../mpiray"],
            capture_output=True,
            check=False,
            text=True,
        ).stdout.strip()
        sha += "+dirty" if dirty else ""
    return {
        "host": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "loadavg_1min": os.getloadavg()[0],
        "python": platform.python_version(),
        "git_sha": sha,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def summarise(system: str, records: list[dict], meta: dict, quick: bool) -> list[dict]:
    """Many samples per workload (from one or many processes) -> one row each."""
    by_name: dict[str, list[dict]] = {}
    for r in records:
        by_name.setdefault(r["workload"], []).append(r)
    rows = []
    for name, recs in by_name.items():
        w = _workloads.ALL[name]
        samples = [v for r in recs for v in r.get("values", [r.get("seconds")])]
        median = statistics.median(samples)
        rows.append(
            {
                "system": system,
                "version": recs[0]["version"],
                "workload": name,
                "value": median,
                "unit": w.unit,
                "min": min(samples),
                "max": max(samples),
                "samples": samples,
                "size": recs[0].get("size"),
                "higher_is_better": w.higher_is_better,
                "ranks": recs[0].get("ranks"),
                "quick": quick,
                "extra": recs[-1].get("extra"),
                **meta,
            }
        )
    return rows


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    v = row["value"]
    spread = 100 * (row["max"] - row["min"]) / 2 / v if v else 0.0
    text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{text} ±{spread:.0f}%"


def table(rows: list[dict], systems: list[str]) -> str:
    names = [n for n in _workloads.ALL if any(r["workload"] == n for r in rows)]
    cells = {(r["system"], r["workload"]): r for r in rows}
    header = ["workload", "unit", *systems]
    lines = [header] + [
        [n, _workloads.ALL[n].unit, *(_cell(cells.get((s, n))) for s in systems)] for n in names
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    fmt = lambda line: "  ".join(c.ljust(widths[i]) for i, c in enumerate(line)).rstrip()
    return "\n".join([fmt(lines[0]), fmt(["-" * w for w in widths])] + [fmt(x) for x in lines[1:]])


def bench_system(
    system: str, args, workloads: list[str], lifecycle: bool
) -> tuple[list[dict], list[str]]:
    reps = args.reps or (3 if args.quick else 5)
    settle, window, wait = ("0.5", "1.0", "2.0") if args.quick else ("3.0", "3.0", "5.0")
    notes, records = [], []
    if lifecycle:
        for _ in range(reps if not args.quick else 1):
            cmd = command(
                system,
                "lifecycle",
                [
                    "--t-spawn",
                    "@T_SPAWN@",
                    "--settle",
                    settle,
                    "--idle-window",
                    window,
                    "--leftover-wait",
                    wait,
                ],
                args.ray_python,
            )
            if isinstance(cmd, str):
                return [], [f"{system}: skipped: {cmd}"]
            recs, failed = run_one(cmd, timeout=60)
            records += recs
            if failed:
                notes.append(f"{system} lifecycle failed: {failed}")
                break
    if system == "mpi4py.futures":
        workloads = [w for w in workloads if w in MPI4PY_WORKLOADS]
    if workloads:
        extra = ["--reps", str(reps), "--workloads", ",".join(workloads)] + (
            ["--quick"] if args.quick else []
        )
        cmd = command(system, "workloads", extra, args.ray_python)
        if isinstance(cmd, str):
            return [], [f"{system}: skipped: {cmd}"]
        recs, failed = run_one(cmd, timeout=120 if args.quick else 1200)
        records += recs
        if failed:
            notes.append(f"{system} workloads failed: {failed}")
    return records, notes


def bench_pull(args, wanted: list[str], meta: dict) -> tuple[list[dict], list[str]]:
    """The cross-rank pull sizes asked for, by ``pull_bench.py``: rows for "mpiray" (the
    raylet's pull) and "mpi4py-rma" (a raw Get in the same launches, sample by sample)."""
    import pull_bench

    pulls = [w for w in _workloads.PULL if w.name in wanted and (w.quick or not args.quick)]
    if not pulls:
        return [], []
    if not _mpiexec():
        return [], ["cross-rank pull: skipped: no mpiexec found"]
    sizes = ",".join(str(w.full) for w in pulls)
    reps, rounds = (1, 1) if args.quick else (4, 3)
    try:
        samples = pull_bench.measure(sizes, reps, rounds, timeout=300 if args.quick else 900)
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return [], [f"cross-rank pull failed: {exc}"]
    from importlib import metadata as md

    rows = []
    for w in pulls:
        n = w.full << 20
        for system, kind, dist in (("mpiray", "raylet", "mpiray"), ("mpi4py-rma", "warm", "mpi4py")):
            values = samples[kind][n]
            rows.append({"system": system, "version": md.version(dist), "workload": w.name,
                         "value": statistics.median(values), "unit": "GB/s", "min": min(values),
                         "max": max(values), "samples": values, "size": n, "higher_is_better": True,
                         "ranks": 3, "quick": args.quick,
                         "extra": {"driver_get": statistics.median(samples["driver"][n]),
                                   "task_pull": statistics.median(samples["task"][n]),
                                   "raw_get_fresh": statistics.median(samples["fresh"][n])}
                         if system == "mpiray" else None, **meta})
    return rows, []


def compile_mpiray() -> None:
    """Byte-compile mpiray, as ``pip install`` of a wheel does (an editable install does not,
    and with PYTHONDONTWRITEBYTECODE every process would compile it again at start-up,
    while Ray's installed wheel is compiled)."""
    import compileall

    import mpiray

    compileall.compile_dir(os.path.dirname(mpiray.__file__), quiet=1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="small sizes, few repetitions (CI smoke run)"
    )
    p.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma list of {', '.join(SYSTEMS)}")
    p.add_argument(
        "--workloads", default=None, help="comma list (default: all): " + ", ".join(_workloads.ALL)
    )
    p.add_argument("--reps", type=int, default=0, help="repetitions (default 5, --quick 3)")
    p.add_argument("--out", default=None, help="append JSON lines here")
    p.add_argument(
        "--ray-python",
        default=os.environ.get("MPIRAY_BENCH_RAY_PYTHON"),
        help="python of a virtual environment with ray installed "
        "(default: $MPIRAY_BENCH_RAY_PYTHON)",
    )
    args = p.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    wanted = args.workloads.split(",") if args.workloads else list(_workloads.ALL)
    unknown = [s for s in systems if s not in SYSTEMS] + [
        w for w in wanted if w not in _workloads.ALL
    ]
    if unknown:
        p.error(f"unknown system/workload: {', '.join(unknown)}")
    task_workloads = [w for w in wanted if w in _workloads.REGISTRY]
    lifecycle = any(w.name in wanted for w in _workloads.LIFECYCLE)
    if "mpiray" in systems or "mpiray-mpiexec" in systems:
        compile_mpiray()
    meta, rows, notes, failed = metadata(), [], [], False
    for system in systems:
        t0 = time.time()
        records, system_notes = bench_system(system, args, task_workloads, lifecycle)
        rows += [r for r in summarise(system, records, meta, args.quick) if r["workload"] in wanted]
        notes += system_notes
        failed |= any("failed" in n for n in system_notes)
        print(f"[{system}: {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    if "mpiray" in systems:
        t0 = time.time()
        pull_rows, pull_notes = bench_pull(args, wanted, meta)
        rows += pull_rows
        notes += pull_notes
        failed |= any("failed" in n for n in pull_notes)
        if pull_rows and "mpi4py-rma" not in systems:
            systems.append("mpi4py-rma")
        print(f"[cross-rank pull: {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    print(
        f"{meta['date']}  {meta['host']}  {meta['cpus']} CPUs  {meta['cpu_model']}  "
        f"git {meta['git_sha']}  load {meta['loadavg_1min']:.2f}"
        + ("  (--quick)" if args.quick else "")
    )
    print(table(rows, systems))
    for n in notes:
        print("note: " + n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
