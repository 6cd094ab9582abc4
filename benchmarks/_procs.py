"""Memory and CPU of a process tree (a cluster: driver, launcher, raylets, workers).

Uses psutil when it is installed, else reads /proc directly (Linux).
"""

from __future__ import annotations

import os
import time

try:
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    return children


def tree(root: int) -> list[int]:
    """``root`` and all its descendants that are alive now."""
    if psutil is not None:
        try:
            p = psutil.Process(root)
            return [root] + [c.pid for c in p.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    children, out, todo = _proc_children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def launcher_root(pid: int) -> int:
    """The nearest ancestor that is an ``mpiexec``/``mpirun`` (launched mode), else ``pid``."""
    p = parent(pid)
    while p > 1:
        first = os.path.basename(cmdline(p).split(" ", 1)[0])
        if first in ("mpiexec", "mpirun", "mpiexec.hydra", "srun"):
            return p
        p = parent(p)
    return pid


def _memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes; PSS falls back to RSS where smaps_rollup is missing."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
        return rss, pss
    except OSError:
        pass
    if psutil is not None:
        try:
            rss = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return rss, rss


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        if psutil is None:
            return 0.0
        try:
            t = psutil.Process(pid).cpu_times()
            return t.user + t.system
        except psutil.NoSuchProcess:
            return 0.0


def idle_usage(root: int, window: float) -> dict:
    """RSS/PSS summed over the tree, and its CPU use over ``window`` seconds (% of one core).

    The measuring process is counted too: it is the driver, and its
    background threads are part of the idle cluster.
    """
    pids = tree(root)
    before = {pid: _cpu_seconds(pid) for pid in pids}
    t0 = time.perf_counter()
    time.sleep(window)
    elapsed = time.perf_counter() - t0
    pids_after = tree(root)
    cpu = sum(_cpu_seconds(pid) - before.get(pid, 0.0) for pid in pids_after)
    rss = pss = 0
    for pid in pids_after:
        r, p = _memory(pid)
        rss += r
        pss += p
    return {
        "rss_mib": rss / 2**20,
        "pss_mib": pss / 2**20,
        "cpu_pct": 100.0 * cpu / elapsed,
        "processes": len(pids_after),
    }
