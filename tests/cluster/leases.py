"""Worker leases (mpiray/_control/lease.py): the driver's direct line to one worker.

Run by test_leases.py on one cluster; one RESULT line each.  Each scenario
first makes sure the driver holds a lease (a few round trips), so the task
under test goes straight to the leased worker, then checks its behaviour.
"""

import os
import shutil
import tempfile
import time
import atexit

import numpy as np

import mpiray as ray
from mpiray import _api
from mpiray import exceptions as rex

T = 60
TMP = tempfile.mkdtemp(prefix="mpiray-leases-")
atexit.register(shutil.rmtree, TMP, True)


def gcs():
    return _api._runtime.gcs


@ray.remote
def one():
    return 1


def leased():
    """Round trips until the driver holds a ready lease; the next lone task uses it."""
    for _ in range(200):
        assert ray.get(one.remote(), timeout=T) == 1
        if any(x.state == "ready" for x in gcs().leases.values()):
            return
    raise AssertionError(f"no lease after 200 round trips: {gcs().leases}")


def leased_count():
    return gcs().stats.get("leased", 0)


def scenario_round_trips_use_the_lease():
    leased()
    before = leased_count()
    assert [ray.get(one.remote(), timeout=T) for _ in range(100)] == [1] * 100
    assert leased_count() - before >= 90, (before, leased_count())


def scenario_errors_come_back_with_their_traceback():
    @ray.remote(max_retries=0)
    def fails(x):
        raise ValueError(f"bad {x}")

    leased()
    try:
        ray.get(fails.remote(7), timeout=T)
    except ValueError as e:
        assert "bad 7" in str(e)
    else:
        raise AssertionError("no error")


def scenario_a_crash_is_retried_elsewhere():
    flag = os.path.join(TMP, "crash-once")

    @ray.remote
    def crash_once():
        if not os.path.exists(flag):
            open(flag, "w").close()
            os._exit(3)
        return 42

    leased()
    before = leased_count()
    ref = crash_once.remote()
    assert ray.get(ref, timeout=T) == 42
    assert leased_count() > before  # the crash happened on the leased worker
    leased()  # a new lease after the lost one
    assert ray.get(one.remote(), timeout=T) == 1


def scenario_a_crash_without_retries_names_the_worker():
    @ray.remote(max_retries=0)
    def crash():
        os._exit(5)

    leased()
    try:
        ray.get(crash.remote(), timeout=T)
    except rex.WorkerCrashedError as e:
        assert "worker pid" in str(e) and "exit" in str(e).lower(), e
    else:
        raise AssertionError("no WorkerCrashedError")
    assert ray.get(one.remote(), timeout=T) == 1


def scenario_cancel_interrupts_a_leased_task():
    @ray.remote
    def sleeper():
        time.sleep(60)

    for force in (False, True):
        leased()
        ref = sleeper.remote()
        time.sleep(0.5)
        t0 = time.monotonic()
        ray.cancel(ref, force=force)
        try:
            ray.get(ref, timeout=T)
        except rex.TaskCancelledError:
            pass
        else:
            raise AssertionError("not cancelled")
        assert time.monotonic() - t0 < 10, f"cancel (force={force}) took {time.monotonic() - t0:.1f} s"
    assert ray.get(one.remote(), timeout=T) == 1


def scenario_nested_tasks_in_a_leased_task():
    # every CPU of the cluster may be leased or busy: a leased task blocked in get()
    # must give its CPU to its children, as any task does
    @ray.remote
    def child(i):
        return i * 2

    @ray.remote
    def parent(n):
        return sum(ray.get([child.remote(i) for i in range(n)]))

    leased()
    assert ray.get(parent.remote(20), timeout=T) == sum(i * 2 for i in range(20))
    leased()
    assert ray.get(one.remote(), timeout=T) == 1


def scenario_puts_inside_a_leased_task_stay_alive():
    # the task's messages to its raylet (the put) and its result (holding the put's ref)
    # reach rank 0 in order: the object is never freed under the result
    @ray.remote
    def wraps():
        return [ray.put(np.arange(100_000))]

    leased()
    inner = ray.get(wraps.remote(), timeout=T)[0]
    time.sleep(0.2)
    assert int(ray.get(inner, timeout=T).sum()) == sum(range(100_000))


def scenario_big_results_of_leased_tasks_are_freed():
    @ray.remote
    def big(i):
        return np.full(4 << 20, i, dtype=np.uint8)

    leased()
    ids = []
    for i in range(30):
        ref = big.remote(i)
        ids.append(ref.id)
        x = ray.get(ref, timeout=T)
        assert x[0] == i and x.nbytes == 4 << 20
        del x, ref
    deadline = time.monotonic() + 10
    while any(i in gcs().objects for i in ids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [i for i in ids if i in gcs().objects], "results still in the object table"


def scenario_an_idle_lease_goes_back():
    # a task needing every CPU of a node runs once the driver's lease has gone back
    leased()
    cpus = int(max(n["Resources"].get("CPU", 0) for n in ray.nodes()))

    @ray.remote(num_cpus=cpus)
    def whole_node():
        return "ok"

    assert ray.get(whole_node.remote(), timeout=T) == "ok"
    time.sleep(0.1)
    assert not gcs().leases, gcs().leases


def scenario_many_tasks_in_flight_do_not_use_the_lease():
    leased()
    before = leased_count()
    refs = [one.remote() for _ in range(200)]
    assert sum(ray.get(refs, timeout=T)) == 200
    assert leased_count() - before <= 1, (before, leased_count())


def scenario_no_tasks_are_sent_ahead_to_a_leased_worker():
    # the raylet sends short tasks ahead to a worker whose (short) task runs; a leased
    # worker running a task that submitted children must get none of them (it serves
    # rank 0 only)
    @ray.remote
    def quick(i):
        return i

    @ray.remote
    def parent(n):
        refs = [quick.remote(i) for i in range(n)]
        if n:
            time.sleep(0.3)  # running, not blocked: the raylet's queue fills meanwhile
        return sum(ray.get(refs))

    assert sum(ray.get([parent.remote(0) for _ in range(50)], timeout=T)) == 0  # "short" now
    leased()
    before = leased_count()
    assert ray.get(parent.remote(400), timeout=T) == sum(range(400))
    assert leased_count() > before
    leased()
    assert [ray.get(one.remote(), timeout=T) for _ in range(20)] == [1] * 20


if __name__ == "__main__":
    from _runner import run_scenarios

    run_scenarios(globals())
