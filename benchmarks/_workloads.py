"""The workloads, written once against the Ray API (run on mpiray and on Ray).

Each workload is ``fn(api, tasks, size) -> seconds`` for one repetition; the
registry says how to turn seconds into the reported value.  Names follow
Ray's ``ray microbenchmark`` where it has one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

MIB = 2**20


@dataclass(frozen=True)
class Workload:
    name: str
    unit: str  # "tasks/s", "us", "GB/s", "ms", "s", "MiB", "%"
    full: int  # size of a full run (tasks, or bytes)
    quick: int  # size of a --quick run
    higher_is_better: bool
    about: str


def make_tasks(api: Any) -> SimpleNamespace:
    """Remote functions for ``api`` (mpiray or ray).  Nested, so cloudpickle ships them by value."""

    def noop():
        return None

    def inc(x):
        return x + 1

    def square(i):
        return i * i

    def add_all(*xs):
        return sum(xs)

    def touch(a):
        return int(a[::4096].sum()) + a.nbytes  # one read per page

    def identity(a):
        return a

    class Counter:
        def __init__(self):
            self.n = 0

        def incr(self):
            self.n += 1
            return self.n

    return SimpleNamespace(
        **{f.__name__: api.remote(f) for f in (noop, inc, square, add_all, touch, identity)},
        Counter=api.remote(Counter),
    )


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tasks_async(api, t, n):
    return _timed(lambda: api.get([t.noop.remote() for _ in range(n)]))


def tasks_sync(api, t, n):
    def run():
        for _ in range(n):
            api.get(t.noop.remote())

    return _timed(run)


def roundtrip_after_idle(api, t, n):
    """One round trip after ``n`` tenths of a second with nothing to do (idle loops sleep
    longer and longer: what does the first task after a pause cost?)."""
    api.get(t.noop.remote())
    time.sleep(n / 10)
    return _timed(lambda: api.get([t.noop.remote(), t.noop.remote()]))


def chain(api, t, n):
    def run():
        ref = t.inc.remote(0)
        for _ in range(n - 1):
            ref = t.inc.remote(ref)
        assert api.get(ref) == n

    return _timed(run)


def map_reduce(api, t, n):
    def run():
        maps = [t.square.remote(i) for i in range(n)]
        assert api.get(t.add_all.remote(*maps)) == sum(i * i for i in range(n))

    return _timed(run)


def _actors(api, t, k):
    """``k`` actors, each up (one call answered), for timing calls alone."""
    actors = [t.Counter.remote() for _ in range(k)]
    api.get([a.incr.remote() for a in actors])
    return actors


def actor_calls_sync(api, t, n):
    (a,) = _actors(api, t, 1)

    def run():
        for _ in range(n):
            api.get(a.incr.remote())

    secs = _timed(run)
    api.kill(a)
    return secs


def actor_calls_async(api, t, n):
    (a,) = _actors(api, t, 1)
    out = []
    secs = _timed(lambda: out.extend(api.get([a.incr.remote() for _ in range(n)])))
    assert out[-1] == n + 1  # every call ran, in order
    api.kill(a)
    return secs


def actor_calls_1_n_async(api, t, n):
    actors = _actors(api, t, 4)
    secs = _timed(lambda: api.get([actors[i % 4].incr.remote() for i in range(n)]))
    for a in actors:
        api.kill(a)
    return secs


def _array(nbytes):
    a = np.empty(nbytes, dtype=np.uint8)
    a[::4096] = 1  # fault the pages in before timing
    a[:] = 7
    return a


def _repeat_count(nbytes):
    return max(1, (64 * MIB) // nbytes)  # small objects: time many in one sample


def put(api, t, nbytes):
    a, k = _array(nbytes), _repeat_count(nbytes)
    refs = []
    return _timed(lambda: refs.extend(api.put(a) for _ in range(k))) / k


def get(api, t, nbytes):
    a, k = _array(nbytes), _repeat_count(nbytes)
    refs = [api.put(a) for _ in range(k)]
    out = []
    secs = _timed(lambda: out.extend(api.get(r) for r in refs))
    assert out[-1].nbytes == nbytes
    return secs / k


def memcpy(api, t, nbytes):
    a, k = _array(nbytes), _repeat_count(nbytes)
    dst = np.empty_like(a)
    np.copyto(dst, a)

    def run():
        for _ in range(k):
            np.copyto(dst, a)

    return _timed(run) / k


def task_read_ref(api, t, nbytes):
    ref = api.put(_array(nbytes))
    api.get(t.noop.remote())  # a worker is up
    return _timed(lambda: api.get(t.touch.remote(ref)))


def arg_roundtrip(api, t, nbytes):
    a = _array(nbytes)
    out = []
    secs = _timed(lambda: out.append(api.get(t.identity.remote(a))))
    assert out[0].nbytes == nbytes
    return secs


_W = Workload
REGISTRY: dict[str, tuple[Workload, Callable]] = {
    w.name: (w, fn)
    for w, fn in [
        (
            _W(
                "single_client_tasks_async",
                "tasks/s",
                10_000,
                1_000,
                True,
                "n no-op tasks submitted, then one get of all",
            ),
            tasks_async,
        ),
        (
            _W(
                "single_client_tasks_sync",
                "us",
                1_000,
                100,
                False,
                "n x get(f.remote()): one round trip",
            ),
            tasks_sync,
        ),
        (
            _W(
                "roundtrip_after_idle",
                "ms",
                30,
                10,
                False,
                "get of two no-op tasks after n/10 s idle (3 s; --quick 1 s)",
            ),
            roundtrip_after_idle,
        ),
        (
            _W(
                "chain_of_tasks",
                "tasks/s",
                1_000,
                100,
                True,
                "n tasks, each taking the previous one's result",
            ),
            chain,
        ),
        (
            _W("map_reduce", "tasks/s", 1_000, 100, True, "n maps then 1 reduce over all n refs"),
            map_reduce,
        ),
        (
            _W("1_1_actor_calls_sync", "us", 1_000, 100, False,
               "n x get(actor.f.remote()): one round trip to one actor"),
            actor_calls_sync,
        ),
        (
            _W("1_1_actor_calls_async", "calls/s", 10_000, 1_000, True,
               "n calls of one actor submitted, then one get of all"),
            actor_calls_async,
        ),
        (
            _W("1_n_actor_calls_async", "calls/s", 10_000, 1_000, True,
               "n calls spread over 4 actors, then one get of all"),
            actor_calls_1_n_async,
        ),
        (_W("memcpy_1MiB", "GB/s", MIB, MIB, True, "anchor: numpy copyto, warm buffers"), memcpy),
        (_W("put_1MiB", "GB/s", MIB, MIB, True, "put of a 1 MiB ndarray"), put),
        (_W("get_1MiB", "GB/s", MIB, MIB, True, "get of a 1 MiB ndarray put by the driver"), get),
        (
            _W(
                "memcpy_100MiB",
                "GB/s",
                100 * MIB,
                8 * MIB,
                True,
                "anchor: numpy copyto, warm buffers",
            ),
            memcpy,
        ),
        (_W("put_100MiB", "GB/s", 100 * MIB, 8 * MIB, True, "put of a 100 MiB ndarray"), put),
        (
            _W(
                "get_100MiB",
                "GB/s",
                100 * MIB,
                8 * MIB,
                True,
                "get of a 100 MiB ndarray put by the driver",
            ),
            get,
        ),
        (
            _W(
                "task_read_100MiB_ref",
                "ms",
                100 * MIB,
                8 * MIB,
                False,
                "a task reading (one byte per page of) a 100 MiB ref",
            ),
            task_read_ref,
        ),
        (
            _W(
                "arg_roundtrip_100MiB",
                "ms",
                100 * MIB,
                8 * MIB,
                False,
                "a 100 MiB ndarray passed as an argument and returned",
            ),
            arg_roundtrip,
        ),
    ]
}

# measured by the lifecycle runner in fresh processes, not by a function above
LIFECYCLE = [
    _W(
        "startup_to_first_result",
        "s",
        0,
        0,
        False,
        "process start (import + init) to the first get() returning",
    ),
    _W("shutdown", "s", 0, 0, False, "shutdown() call, until it returns"),
    _W(
        "idle_cluster_rss",
        "MiB",
        0,
        0,
        False,
        "RSS summed over driver, launcher, raylets and workers, idle",
    ),
    _W("idle_cluster_cpu", "%", 0, 0, False, "CPU of the whole idle cluster, % of one core"),
]
# measured by pull_bench.py (mpiexec -n 3, every rank its own host): an object made on rank 1
# read by a task on rank 2, the raylet's pull alone (system "mpiray"), and a raw mpi4py RMA Get
# of the same size in the same launch, sample by sample (system "mpi4py-rma"); ``full`` is the
# size in MiB, ``quick`` the same or 0 (not in a --quick run)
PULL = [
    _W(f"cross_rank_pull_{label}", "GB/s", mib, mib if mib < 1024 else 0, True,
       f"an object of {label} pulled by another rank's raylet (MPI one-sided), vs a raw Get")
    for label, mib in (("1MiB", 1), ("100MiB", 100), ("1GiB", 1024))
]
ALL = {**{name: w for name, (w, _) in REGISTRY.items()}, **{w.name: w for w in LIFECYCLE},
       **{w.name: w for w in PULL}}


def value(w: Workload, seconds: float, size: int) -> float:
    """Seconds of one repetition -> the reported value in ``w.unit``."""
    if w.unit in ("tasks/s", "calls/s"):
        return (size + (1 if w.name == "map_reduce" else 0)) / seconds
    if w.unit == "us":
        return 1e6 * seconds / size
    if w.unit == "GB/s":
        return size / seconds / 1e9
    if w.unit == "ms":
        return 1e3 * seconds
    return seconds
