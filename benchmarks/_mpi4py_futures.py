"""Task workloads on mpi4py.futures' MPIPoolExecutor (the MPI-native baseline).

There are no ObjectRefs: a dependent task waits for its input on the client,
so the chain is a sequence of submit/result pairs and the reduce is submitted
after the map results are back.
"""

from __future__ import annotations

import time

# Module-level on purpose: MPIPoolExecutor pickles functions by reference, so its worker
# ranks import them from here (mpiray and Ray get nested copies shipped by value instead,
# see _workloads.make_tasks).


def noop():
    return None


def inc(x):
    return x + 1


def square(i):
    return i * i


def add_all(*xs):
    return sum(xs)


def tasks_async(ex, n):
    t0 = time.perf_counter()
    for f in [ex.submit(noop) for _ in range(n)]:
        f.result()
    return time.perf_counter() - t0


def tasks_sync(ex, n):
    t0 = time.perf_counter()
    for _ in range(n):
        ex.submit(noop).result()
    return time.perf_counter() - t0


def chain(ex, n):
    t0 = time.perf_counter()
    x = 0
    for _ in range(n):
        x = ex.submit(inc, x).result()
    assert x == n
    return time.perf_counter() - t0


def map_reduce(ex, n):
    t0 = time.perf_counter()
    values = [f.result() for f in [ex.submit(square, i) for i in range(n)]]
    assert ex.submit(add_all, *values).result() == sum(i * i for i in range(n))
    return time.perf_counter() - t0


WORKLOADS = {
    "single_client_tasks_async": tasks_async,
    "single_client_tasks_sync": tasks_sync,
    "chain_of_tasks": chain,
    "map_reduce": map_reduce,
}
