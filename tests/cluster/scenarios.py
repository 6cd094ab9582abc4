"""Core-runtime scenarios, run on one real cluster per launch (see test_core.py).

Run as ``mpiexec -n 3 python scenarios.py`` (or alone: embedded cluster).
Rank 0 runs every ``scenario_*`` function and prints one line per scenario:
``RESULT <name> ok`` or ``RESULT <name> FAIL <reason>``.  Each scenario bounds
its own waits with ``get(timeout=...)``, so one broken scenario cannot hang
the others.
"""

import os
import time
import traceback

import numpy as np

import mpiray as ray
from mpiray import exceptions as rex

T = 30  # seconds any single get may take


@ray.remote
def add(a, b):
    return a + b


@ray.remote
def ident(x):
    return x


@ray.remote
def total(xs):
    return sum(ray.get(xs))  # Ray code calls get() on the list; values come back unchanged


@ray.remote
def fails(msg):
    raise ValueError(msg)


@ray.remote
def fib(n):
    if n < 2:
        return n
    return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)], timeout=T))


@ray.remote
def sleeper(s):
    time.sleep(s)
    return os.getpid()


def scenario_basic():
    assert ray.get(add.remote(1, 2), timeout=T) == 3
    assert ray.get([add.remote(i, i) for i in range(50)], timeout=T) == [2 * i for i in range(50)]
    assert ray.get(add.remote(a=1, b=5), timeout=T) == 6


def scenario_direct_call_is_type_error():
    try:
        add(1, 2)
    except TypeError as e:
        assert ".remote(" in str(e), e
    else:
        raise AssertionError("calling a remote function directly must raise TypeError")


def scenario_options_and_num_returns():
    @ray.remote(num_returns=3)
    def three():
        return 1, 2, 3

    refs = three.remote()
    assert isinstance(refs, list) and len(refs) == 3
    assert ray.get(refs, timeout=T) == [1, 2, 3]
    a, b = ident.options(num_returns=2).remote((7, 8))
    assert ray.get([a, b], timeout=T) == [7, 8]
    for bad in ({"num_cpus": -1}, {"num_gpus": "x"}, {"bogus": 1}, {"num_returns": 0}):
        try:
            ident.options(**bad)
        except (TypeError, ValueError) as e:
            assert list(bad)[0] in str(e), e
        else:
            raise AssertionError(f"options({bad}) must be rejected")


def scenario_task_error_is_original_type():
    try:
        ray.get(fails.remote("boom-42"), timeout=T)
    except ValueError as e:
        text = "".join(traceback.format_exception(e))
        assert "boom-42" in str(e)
        assert "fails" in text and "rank " in text and "host" in text, text
        assert isinstance(e.__cause__, rex.RemoteTraceback)
    else:
        raise AssertionError("no error raised")


def scenario_errors_propagate_to_dependents():
    bad = fails.remote("upstream")
    try:
        ray.get(add.remote(bad, 1), timeout=T)
    except ValueError as e:
        assert "upstream" in str(e)
    else:
        raise AssertionError("dependent of a failed task must fail")


def scenario_dag_and_nested_refs():
    a = add.remote(1, 2)
    b = add.remote(a, 10)
    c = add.remote(a, b)
    assert ray.get(c, timeout=T) == 16
    refs = [ident.remote(i) for i in range(10)]
    assert ray.get(total.remote(refs), timeout=T) == 45
    assert ray.get(ident.remote({"k": refs[3], "l": (refs[4],)}), timeout=T) == {"k": 3, "l": (4,)}

    @ray.remote(resolve_nested_refs=False)
    def keep(xs):
        assert all(isinstance(x, ray.ObjectRef) for x in xs)
        return sum(ray.get(xs, timeout=T))

    assert ray.get(keep.remote(refs), timeout=T) == 45


def scenario_independent_tasks_run_in_parallel():
    cpus = int(ray.cluster_resources()["CPU"])
    t0 = time.monotonic()
    pids = ray.get([sleeper.remote(1.0) for _ in range(cpus)], timeout=T)
    took = time.monotonic() - t0
    assert len(set(pids)) == cpus, pids
    assert took < cpus * 1.0 * 0.75, f"{cpus} one-second tasks took {took:.2f}s"


def scenario_nested_fib_deeper_than_cpus():
    assert ray.get(fib.remote(7), timeout=60) == 13


def scenario_put_get_zero_copy():
    a = np.arange(4_000_000, dtype=np.float64)
    r = ray.put(a)
    b = ray.get(r, timeout=T)
    assert np.array_equal(a, b)
    assert not b.flags.writeable and not b.flags.owndata  # a read-only view of shared memory
    assert ray.get(ray.put({"small": 1}), timeout=T) == {"small": 1}

    @ray.remote
    def inspect(x):
        return (float(x.sum()), x.flags.writeable)

    s, writeable = ray.get(inspect.remote(r), timeout=T)
    assert s == float(a.sum()) and writeable is False


def scenario_large_argument_passed_by_reference():
    big = np.ones(3_000_000, dtype=np.uint8)

    @ray.remote
    def look(x):
        return (int(x.sum()), x.flags.writeable)  # stored args come as read-only shm views

    assert ray.get(look.remote(big), timeout=T) == (3_000_000, False)
    out = ray.get(ident.remote(big), timeout=T)
    assert out.shape == big.shape and int(out.sum()) == 3_000_000


def scenario_get_on_values_returns_them():
    assert ray.get(5) == 5
    assert ray.get([1, ident.remote(2)], timeout=T) == [1, 2]


def scenario_wait_and_timeouts():
    fast = ident.remote(1)
    slow = sleeper.remote(5)
    ready, rest = ray.wait([slow, fast], num_returns=1, timeout=T)
    assert ready == [fast] and rest == [slow], (ready, rest)
    ready, rest = ray.wait([slow], timeout=0.1)
    assert ready == [] and rest == [slow]
    t0 = time.monotonic()
    try:
        ray.get(slow, timeout=0.2)
    except rex.GetTimeoutError:
        assert time.monotonic() - t0 < 3
    else:
        raise AssertionError("get(timeout=0.2) on a 5 s task must time out")
    assert isinstance(rex.GetTimeoutError("x"), TimeoutError)


def scenario_get_and_wait_timeouts_inside_a_task():
    @ray.remote
    def impatient():
        slow, fast = sleeper.remote(3), ident.remote(7)
        try:
            ray.get(slow, timeout=0.3)
            timed_out = False
        except rex.GetTimeoutError:
            timed_out = True
        ready, rest = ray.wait([slow, fast], num_returns=1, timeout=T)
        none_ready, _ = ray.wait([slow], timeout=0.1)
        both = ray.get([fast, slow], timeout=T)  # and a later get still works
        return timed_out, ready == [fast], rest == [slow], none_ready, both[0]

    timed_out, fast_first, slow_rest, none_ready, value = ray.get(impatient.remote(), timeout=T)
    assert timed_out and fast_first and slow_rest and none_ready == [] and value == 7


def scenario_cluster_info():
    nodes = ray.nodes()
    assert nodes and all(n["Alive"] for n in nodes)
    res = ray.cluster_resources()
    assert res["CPU"] == sum(n["Resources"]["CPU"] for n in nodes)
    assert ray.available_resources()["CPU"] <= res["CPU"]

    @ray.remote
    def ctx():
        c = ray.get_runtime_context()
        return c.rank, c.get_node_id(), c.get_task_id(), c.get_assigned_resources()

    rank, node_id, task_id, assigned = ray.get(ctx.remote(), timeout=T)
    assert rank >= 1 and node_id in {n["NodeID"] for n in nodes} and task_id
    assert assigned == {"CPU": 1}


def scenario_print_is_prefixed():
    @ray.remote
    def talk(i):
        print(f"talking-{i}")
        return i

    ray.get([talk.remote(i) for i in range(3)], timeout=T)


def scenario_unpicklable_argument():
    import threading

    lock = threading.Lock()
    try:
        ident.remote(lock)
    except TypeError as e:
        assert "argument 0" in str(e) and "lock" in str(e).lower(), e
    else:
        raise AssertionError("an unpicklable argument must raise TypeError at .remote()")
    assert ray.get(ident.remote(1), timeout=T) == 1


def scenario_infeasible_fails_fast():
    try:
        ident.options(num_cpus=10_000).remote(1)
    except rex.InfeasibleResourceError as e:
        assert "10000" in str(e) and "CPU" in str(e), e
    else:
        raise AssertionError("an impossible request must fail at once")
    try:
        ident.options(resources={"unobtainium": 1}).remote(1)
    except ValueError as e:
        assert "unobtainium" in str(e)
    else:
        raise AssertionError("an impossible custom resource must fail at once")


def scenario_worker_crash_reported_and_cluster_survives():
    @ray.remote(max_retries=0)
    def die():
        os._exit(3)

    try:
        ray.get(die.remote(), timeout=T)
    except rex.WorkerCrashedError as e:
        assert "exited with code 3" in str(e), e
    else:
        raise AssertionError("a dead worker must raise WorkerCrashedError")
    assert ray.get([add.remote(i, 1) for i in range(10)], timeout=T) == list(range(1, 11))


def scenario_objects_are_freed():
    rt = ray._api._rt()
    base = len(rt.gcs.objects)
    for _ in range(200):
        r = ray.put(np.zeros(1 << 20, dtype=np.uint8))
        del r
    for _ in range(50):
        ray.get(ident.remote(np.zeros(1 << 18)), timeout=T)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(rt.gcs.objects) > base + 5:
        time.sleep(0.05)
    assert len(rt.gcs.objects) <= base + 5, (base, len(rt.gcs.objects))
    held = ray.put(np.ones(1 << 20))
    time.sleep(0.2)
    assert float(ray.get(held, timeout=T).sum()) == float(1 << 20)


@ray.remote(resolve_nested_refs=False)
def short_or_blocking(x, box):
    if box:  # the ref in the list stays a ref: this task blocks in get() inside
        return ray.get(box[0], timeout=T) + x
    return x


def scenario_prefetched_tasks_and_blocking_tasks_mix():
    # many short runs teach the raylet to send tasks of this function ahead to busy
    # workers; some later ones block in get(), so tasks queued behind them come back
    ray.get([short_or_blocking.remote(i, []) for i in range(300)], timeout=T)
    slow = [sleeper.remote(0.3) for _ in range(2)]
    pids = ray.get(slow, timeout=T)
    refs = [short_or_blocking.remote(i, [slow[i % 2]] if i % 7 == 0 else []) for i in range(200)]
    want = [i + (pids[i % 2] if i % 7 == 0 else 0) for i in range(200)]
    assert ray.get(refs, timeout=T) == want
    # and with children still pending while their parents block
    late = [sleeper.remote(0.2) for _ in range(2)]
    refs = [short_or_blocking.remote(i, [late[i % 2]] if i % 5 == 0 else []) for i in range(100)]
    got = ray.get(refs, timeout=T)
    assert got[1] == 1 and got[0] > 0 and len(got) == 100


@ray.remote
def gc_settings():
    import gc

    return gc.get_threshold()


def scenario_workers_keep_the_interpreters_garbage_collection():
    # a raylet makes no full collection while busy; its workers run user code and must
    import gc

    assert ray.get([gc_settings.remote() for _ in range(4)], timeout=T) == [gc.get_threshold()] * 4


def scenario_declared_gpus_are_assigned():
    gpus = ray.cluster_resources().get("GPU", 0)
    if not gpus:
        return  # this cluster was started without declared GPUs

    @ray.remote(num_gpus=1)
    def gpu_task():
        time.sleep(0.5)
        return os.environ["CUDA_VISIBLE_DEVICES"], ray.get_gpu_ids(), ray.get_runtime_context().rank

    out = ray.get([gpu_task.remote() for _ in range(int(gpus))], timeout=T)
    seen = {(rank, env) for env, ids, rank in out}
    assert len(seen) == int(gpus), out
    for env, ids, _ in out:
        assert env == ",".join(str(i) for i in ids) and len(ids) == 1, out


@ray.remote
def echo(value):
    return value


def scenario_short_tasks_with_big_inline_values_never_stall():
    # ~60 KB in and out of each short task: tasks sent ahead to a worker must never fill
    # its socket while the worker is blocked sending a result back (a deadlock)
    payload = b"x" * 60_000
    for _ in range(3):
        refs = [echo.remote(payload) for _ in range(300)]
        assert all(v == payload for v in ray.get(refs, timeout=T))


if __name__ == "__main__":
    from _runner import run_scenarios

    run_scenarios(globals())

