"""Fault-tolerance scenarios: the crash matrix, retries, lineage, cancel, bad input.

Run by test_faults.py on one cluster (``mpiexec -n 3``); one RESULT line each.
"""

import atexit
import ctypes
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np

import mpiray as ray
from mpiray import exceptions as rex

T = 60
TMP = tempfile.mkdtemp(prefix="mpiray-faults-")
atexit.register(shutil.rmtree, TMP, True)  # markers of this run only


def marker(name):
    return os.path.join(TMP, name)


def expect(exc_type, fn, *words):
    try:
        fn()
    except exc_type as e:
        for w in words:
            assert w in str(e), f"{w!r} not in {e}"
        return e
    raise AssertionError(f"expected {exc_type.__name__}")


@ray.remote
def add(a, b):
    return a + b


def _explode():
    raise RuntimeError("cannot unpickle this on the worker")


class ExplodesOnLoad:
    def __reduce__(self):
        return (_explode, ())


@ray.remote(max_retries=0)
def takes(x):
    return 1


@ray.remote(max_retries=0)
def divide(a, b):
    return a / b


@ray.remote(max_retries=0)
def exit_now(code):
    os._exit(code)


@ray.remote(max_retries=0)
def segfault():
    ctypes.string_at(0)


@ray.remote
def die_once(path):
    if not os.path.exists(path):
        open(path, "w").close()
        os._exit(1)
    return "second attempt"


@ray.remote
def wait_to_be_killed(path, retried_path):
    if os.path.exists(path):
        return "retried"
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)
    time.sleep(60)
    return "not killed"


@ray.remote(max_retries=0)
def returns_lock():
    return threading.Lock()


@ray.remote(max_retries=0)
def returns_huge():
    return np.zeros(64 << 20, dtype=np.uint8)


def scenario_crash_matrix():
    # 1. pickling failure: at .remote(), naming the argument
    expect(TypeError, lambda: takes.remote(threading.Lock()), "argument 0")
    # 2. unpickling failure on the worker: the loader's exception, with the remote traceback
    expect(RuntimeError, lambda: ray.get(takes.remote(ExplodesOnLoad()), timeout=T), "cannot unpickle")
    # 3. exception in the task
    expect(ZeroDivisionError, lambda: ray.get(divide.remote(1, 0), timeout=T))
    # 4. os._exit
    expect(rex.WorkerCrashedError, lambda: ray.get(exit_now.remote(7), timeout=T), "exited with code 7")
    # 5. SIGSEGV
    expect(rex.WorkerCrashedError, lambda: ray.get(segfault.remote(), timeout=T), "SIGSEGV")
    # 6. worker SIGKILLed mid-task, no retries left
    path = marker("kill-0")
    ref = wait_to_be_killed.options(max_retries=0).remote(path, "")
    pid = _wait_for_pid(path)
    os.kill(pid, signal.SIGKILL)
    expect(rex.WorkerCrashedError, lambda: ray.get(ref, timeout=T), "SIGKILL", "out of memory")
    # 7. unpicklable result
    expect(TypeError, lambda: ray.get(returns_lock.remote(), timeout=T), "returned a value that cannot be serialized")
    # 8. result larger than the node's object store
    expect(rex.ObjectStoreFullError, lambda: ray.get(returns_huge.remote(), timeout=T), "MiB", "object_store_memory")
    # and the same cluster still works
    assert ray.get([add.remote(i, i) for i in range(20)], timeout=T) == [2 * i for i in range(20)]


def _wait_for_pid(path):
    end = time.monotonic() + T
    while not os.path.exists(path):
        assert time.monotonic() < end, "task never started"
        time.sleep(0.02)
    return int(open(path).read())


def scenario_crash_is_retried():
    assert ray.get(die_once.remote(marker("die-once")), timeout=T) == "second attempt"
    path = marker("kill-1")
    ref = wait_to_be_killed.options(max_retries=1).remote(path, "")
    os.kill(_wait_for_pid(path), signal.SIGKILL)
    assert ray.get(ref, timeout=T) == "retried"


@ray.remote(max_retries=2)
def tiny(i, path):
    if i == 150 and not os.path.exists(path):
        open(path, "w").close()
        os._exit(3)  # dies with short tasks queued behind it in its socket
    return i


def scenario_tiny_tasks_sent_ahead_survive_a_worker_crash():
    path = marker("tiny-crash")
    for _ in range(2):  # the first round teaches the raylets that tiny() is short
        refs = [tiny.remote(i, path) for i in range(400)]
        assert ray.get(refs, timeout=T) == list(range(400))
    assert os.path.exists(path)
    refs = [tiny.remote(i, path) for i in range(400)]
    ray.cancel(refs[300])  # queued or sent ahead: it never runs, the rest do
    out = []
    for i, r in enumerate(refs):
        try:
            out.append(ray.get(r, timeout=T))
        except rex.TaskCancelledError:
            out.append("cancelled")
    assert out[:300] == list(range(300)) and out[301:] == list(range(301, 400))
    assert out[300] in ("cancelled", 300)  # it may have finished before the cancel


@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def link(x, i, fail_at, how, path):
    if i == fail_at:
        if how == "error":
            raise ValueError(f"link {i} fails")
        if how == "flaky" and not os.path.exists(path):
            open(path, "w").close()
            raise KeyError("the first try fails")
        if how == "crash" and not os.path.exists(path):
            open(path, "w").close()
            os._exit(3)  # with the next links queued behind it in its socket
        if how == "sleep":  # cancelled while it runs, with the next link behind it
            time.sleep(30)
        if how == "block":  # waits in get(): links sent behind it come back to the raylet
            ray.get(sleeper.remote(0.2), timeout=T)
    return x + 1


def _chain(n, fail_at=-1, how="", path=""):
    r = 0
    for i in range(n):
        r = link.remote(r, i, fail_at, how, path)
    return r


def _chained():
    time.sleep(1.2)  # raylets report with their next heartbeat
    return sum(n["TasksChained"] for n in ray.nodes())


def scenario_chained_tasks_take_errors_retries_crashes_and_blocks():
    # short links teach the raylet to send each link to the worker running the one before
    # it, which takes the argument from that task's result (no round through the raylet)
    before = _chained()
    for _ in range(2):
        assert ray.get(_chain(300), timeout=T) == 300
    assert _chained() > before + 100  # most links went that way
    # a link fails: every later link fails with its error, as Ray's do
    expect(ValueError, lambda: ray.get(_chain(300, 150, "error"), timeout=T), "link 150 fails")
    # its error is retried (retry_exceptions): the links behind it wait for the new try
    assert ray.get(_chain(300, 150, "flaky", marker("chain-flaky")), timeout=T) == 300
    assert os.path.exists(marker("chain-flaky"))
    # its worker dies: it runs again (max_retries), then the links behind it
    assert ray.get(_chain(300, 150, "crash", marker("chain-crash")), timeout=T) == 300
    assert os.path.exists(marker("chain-crash"))
    assert ray.get(_chain(300, 150, "block"), timeout=T) == 300
    # cancelled while it runs: the interrupt hits it, never the link queued behind it
    refs, r = [], 0
    for i in range(300):
        r = link.remote(r, i, 150, "sleep", "")
        refs.append(r)
    assert ray.get(refs[149], timeout=T) == 150
    time.sleep(0.3)
    ray.cancel(refs[150])
    expect(rex.TaskCancelledError, lambda: ray.get(refs[150], timeout=T))
    expect(rex.TaskCancelledError, lambda: ray.get(refs[-1], timeout=T))
    # cancelled while it waits behind the link before it
    refs, r = [], 0
    for i in range(300):
        r = link.remote(r, i, -1, "", "")
        refs.append(r)
    ray.cancel(refs[200])
    try:
        assert ray.get(refs[-1], timeout=T) == 300  # it had finished before the cancel
    except rex.TaskCancelledError:
        assert ray.get(refs[199], timeout=T) == 200
        expect(rex.TaskCancelledError, lambda: ray.get(refs[200], timeout=T))


def scenario_retry_exceptions():
    @ray.remote(retry_exceptions=True, max_retries=2)
    def flaky(path):
        if not os.path.exists(path):
            open(path, "w").close()
            raise ValueError("first try fails")
        return "ok"

    assert ray.get(flaky.remote(marker("flaky")), timeout=T) == "ok"

    @ray.remote(retry_exceptions=[KeyError], max_retries=2)
    def wrong_kind(path):
        with open(path, "a") as f:
            f.write("x")
        raise ValueError("not retried")

    expect(ValueError, lambda: ray.get(wrong_kind.remote(marker("wrong")), timeout=T))
    assert open(marker("wrong")).read() == "x"

    @ray.remote(max_retries=3)
    def app_error_default(path):
        with open(path, "a") as f:
            f.write("x")
        raise KeyError("application errors are not retried by default")

    expect(KeyError, lambda: ray.get(app_error_default.remote(marker("default")), timeout=T))
    assert open(marker("default")).read() == "x"


@ray.remote
def make(n, seed):
    return np.arange(n, dtype=np.int64) * seed


@ray.remote
def double(x):
    return x * 2


def _lose(ref):
    rt = ray._api._rt()
    info = rt.gcs.objects[ref.id].info
    assert info[0] == "shm", info
    os.unlink(rt.store.path(ref.id, info[1]))


def scenario_lineage_reconstruction():
    x = make.remote(1_000_000, 3)
    assert int(ray.get(x, timeout=T)[-1]) == 2_999_997
    _lose(x)
    again = ray.get(x, timeout=T)  # rebuilt by re-running make
    assert again.shape == (1_000_000,) and int(again[-1]) == 2_999_997
    # a task whose argument was lost: the argument is rebuilt first
    _lose(x)
    assert int(ray.get(double.remote(x), timeout=T)[-1]) == 5_999_994
    # recursive: both the result and its input are gone
    y = double.remote(x)
    ray.wait([y], timeout=T)
    _lose(x)
    _lose(y)
    assert int(ray.get(y, timeout=T)[-1]) == 5_999_994


@ray.remote
def last_of(boxed):
    return int(ray.get(boxed[0])[-1])  # a get inside a task: the worker asks its raylet


def scenario_lost_object_read_inside_a_task_on_another_rank_is_rebuilt():
    # the reading raylet reports the copy that is gone (the owner's), not its own: the
    # GCS then rebuilds the object instead of sending the reader back to the same owner
    nodes = sorted(n["Rank"] for n in ray.nodes())
    on = {r: ray.NodeAffinitySchedulingStrategy([n for n in ray.nodes() if n["Rank"] == r][0]["NodeID"])
          for r in nodes}
    x = make.options(scheduling_strategy=on[nodes[0]]).remote(1_000_000, 3)
    ray.wait([x], timeout=T)
    _lose(x)
    got = ray.get(last_of.options(scheduling_strategy=on[nodes[-1]]).remote([x]), timeout=T)
    assert got == 2_999_997, got


def scenario_lost_put_object_raises():
    r = ray.put(np.ones(1_000_000))
    _lose(r)
    expect(rex.ObjectLostError, lambda: ray.get(r, timeout=T), "put()")
    expect(rex.ObjectLostError, lambda: ray.get(double.remote(r), timeout=T))


def scenario_lineage_is_released():
    rt = ray._api._rt()
    base = len(rt.gcs.lineage)
    refs = [make.remote(10, i) for i in range(200)]
    ray.get(refs, timeout=T)
    assert len(rt.gcs.lineage) >= base + 200
    del refs
    end = time.monotonic() + 10
    while len(rt.gcs.lineage) > base and time.monotonic() < end:
        time.sleep(0.05)
    assert len(rt.gcs.lineage) <= base, (base, len(rt.gcs.lineage))


@ray.remote
def sleeper(s, path=None):
    time.sleep(s)
    if path:
        open(path, "w").close()
    return s


def scenario_cancel_queued_task_never_runs():
    cpus = int(ray.cluster_resources()["CPU"])
    blockers = [sleeper.remote(2) for _ in range(3 * cpus)]
    path = marker("never")
    ref = sleeper.remote(0, path)
    ray.cancel(ref)
    expect(rex.TaskCancelledError, lambda: ray.get(ref, timeout=T))
    ray.get(blockers, timeout=T)
    time.sleep(0.5)
    assert not os.path.exists(path), "a cancelled queued task ran"


def scenario_cancel_running_task():
    ref = sleeper.options(max_retries=3).remote(60)
    time.sleep(1.0)
    t0 = time.monotonic()
    ray.cancel(ref)
    expect(rex.TaskCancelledError, lambda: ray.get(ref, timeout=T))
    assert time.monotonic() - t0 < 10

    @ray.remote
    def stubborn():
        while True:
            try:
                time.sleep(60)
            except KeyboardInterrupt:
                pass

    ref = stubborn.remote()
    time.sleep(1.0)
    ray.cancel(ref, force=True)
    expect(rex.TaskCancelledError, lambda: ray.get(ref, timeout=T))
    assert ray.get(add.remote(1, 1), timeout=T) == 2


def scenario_cancel_is_recursive():
    @ray.remote
    def parent():
        return ray.get(sleeper.remote(60))

    cpus = ray.cluster_resources()["CPU"]
    ref = parent.remote()
    time.sleep(1.5)
    ray.cancel(ref)
    expect(rex.TaskCancelledError, lambda: ray.get(ref, timeout=T))
    end = time.monotonic() + 15
    while ray.available_resources().get("CPU", 0) < cpus and time.monotonic() < end:
        time.sleep(0.1)
    assert ray.available_resources()["CPU"] == cpus, "the child task is still running"


def scenario_finished_task_keeps_result_after_cancel():
    ref = add.remote(2, 3)
    assert ray.get(ref, timeout=T) == 5
    ray.cancel(ref)
    assert ray.get(ref, timeout=T) == 5


def scenario_function_not_importable_on_worker():
    d = os.path.join(TMP, "mods")  # removed with TMP at exit
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "driver_only_mod.py"), "w") as f:
        f.write("def f():\n    return 1\n")
    sys.path.insert(0, d)
    import driver_only_mod

    remote_f = ray.remote(max_retries=0)(driver_only_mod.f)
    expect(RuntimeError, lambda: ray.get(remote_f.remote(), timeout=T), "importable", "driver_only_mod")


def scenario_bad_calls_are_clean_errors():
    expect(ValueError, lambda: add.options(num_cpus=1, bogus=2), "bogus", "num_gpus")
    expect(ValueError, lambda: add.options(num_gpus=-1).remote(1, 2), "num_gpus")
    expect(TypeError, lambda: add.options(memory="lots"), "memory")
    expect(ValueError, lambda: ray.get(add.remote(1, 2), timeout=-1), "timeout")
    expect(TypeError, lambda: ray.wait(add.remote(1, 2)), "list")
    expect(ValueError, lambda: ray.wait([add.remote(1, 2)], num_returns=2), "num_returns")
    expect(TypeError, lambda: ray.cancel("not a ref"), "ObjectRef")


def scenario_property_random_options_and_values():
    from hypothesis import HealthCheck, given, settings, strategies as st

    numbers = st.one_of(st.integers(-3, 5), st.floats(-1, 3), st.just(float("nan")), st.text(max_size=2),
                        st.none(), st.booleans())
    option = st.dictionaries(st.sampled_from(["num_cpus", "num_gpus", "memory", "num_returns",
                                              "max_retries", "retry_exceptions", "bogus", "resources",
                                              "scheduling_strategy"]), numbers, max_size=3)
    values = st.recursive(st.one_of(st.integers(), st.text(max_size=5), st.floats(allow_nan=False),
                                    st.binary(max_size=10), st.none()),
                          lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=3), c, max_size=3),
                          max_leaves=8)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(option, values, st.one_of(st.none(), st.floats(0, 5), st.integers(-2, 2), st.text(max_size=1)))
    def check(opts, value, timeout):
        try:
            f = ray.remote(lambda v: v).options(**opts)
        except (TypeError, ValueError):
            return  # a clean error at .options()
        try:
            ref = f.remote(value)
        except (TypeError, ValueError):
            return
        try:
            got = ray.get(ref, timeout=timeout)
        except (TypeError, ValueError) as e:
            assert "timeout" in str(e) or "num_returns" in str(e), e
            return
        except rex.GetTimeoutError:
            return
        n = f._options.num_returns
        if n == 1:
            assert got == value
        ready, rest = ray.wait(ref if isinstance(ref, list) else [ref], num_returns=1, timeout=10)
        assert len(ready) == 1

    check()


if __name__ == "__main__":
    from _runner import run_scenarios

    run_scenarios(globals())
