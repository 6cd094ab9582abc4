"""Worker leases in the GCS (mpiray/_control/lease.py): a pure state machine, no IO."""

from mpiray._options import UNIT
from mpiray._protocol import messages as m
from test_gcs import make, spec, take


def leasing(cpus=2):
    g = make(cpus=cpus)
    g.lease_host = "h"
    return g


def lease_one(g):
    """The first lone task asks for its worker; the raylet lends it, the worker connects."""
    g.submit(spec("a"), b"code", 0)
    out = take(g)
    assert [(d, msg[0]) for d, msg in out] == [(1, m.TASKS), (1, m.LEASE)]
    lease_id = out[1][1][2]
    g.lease_granted(1, lease_id, 4242)      # LEASED comes before the task's DONE
    g.task_done(1, "a", [("a.0", ("inline", 1), ())], None)
    assert g.leases[lease_id].state == "granting"  # not connected yet
    assert g.lease_connected(lease_id)
    assert g.leases[lease_id].state == "ready"
    g.refs([("a.0", -1)])
    take(g)
    return lease_id


def cpu_load(g):
    return g.scheduler.nodes[1].load.get("CPU", 0)


def test_a_lone_task_goes_to_the_leased_worker_and_comes_back():
    g = leasing()
    lid = lease_one(g)
    assert cpu_load(g) == UNIT  # the lease holds its CPU
    g.submit(spec("b"), None, 0)
    out = take(g)
    assert out == [(("lease", lid), (m.W_RUN, g.tasks["b"].spec, b"code", {}, ()))]
    assert g.leases[lid].state == "busy" and g.stats["leased"] == 1
    g.task_done(1, "b", [("b.0", ("inline", 2), ())], None)
    assert g.objects["b.0"].info == ("inline", 2)
    assert g.leases[lid].state == "ready" and cpu_load(g) == UNIT
    g.submit(spec("c"), None, 0)
    assert take(g)[0][1][2] is None  # the function went with the first leased task only


def test_tasks_in_flight_together_take_the_usual_way():
    g = leasing()
    lease_one(g)
    g.submit(spec("b"), None, 0)
    g.submit(spec("c"), None, 0)  # the driver now has two in flight: no lease for this one
    kinds = [dest if isinstance(dest, int) else dest[0] for dest, _ in take(g)]
    assert kinds == ["lease", 1]


def test_refused_lease_is_forgotten():
    g = leasing()
    g.submit(spec("a"), b"code", 0)
    lid = take(g)[1][1][2]
    g.task_done(1, "a", [("a.0", ("inline", 1), ())], None)  # DONE without LEASED: refused
    assert lid not in g.leases and cpu_load(g) == 0


def test_connection_may_come_before_leased():
    g = leasing()
    g.submit(spec("a"), b"code", 0)
    lid = take(g)[1][1][2]
    assert g.lease_connected(lid)
    assert g.leases[lid].state == "granting"
    g.lease_granted(1, lid, 7)
    assert g.leases[lid].state == "ready"
    assert not g.lease_connected("L999")  # unknown: the service closes that connection


def lose_while_running(retries, why):
    """A lease whose worker dies (its raylet says so) while it runs task b."""
    g = leasing()
    lid = lease_one(g)
    g.submit(spec("b", retries=retries), None, 0)
    take(g)
    g.lease_lost(1, lid, why, "rank 1 on host h, worker pid 4242")
    assert lid not in g.leases
    return g


def test_lost_lease_retries_its_task_the_usual_way():
    g = lose_while_running(1, "killed by signal 9")
    out = take(g)
    assert [(d, msg[0]) for d, msg in out][0] == (1, m.TASKS)  # retried through the raylet
    assert g.tasks["b"].spec.attempt == 1 and g.tasks["b"].lease is None
    assert cpu_load(g) == UNIT  # the retry's CPU only


def test_lost_lease_without_retries_fails_with_the_worker_named():
    g = lose_while_running(0, "exit code 5")
    info = g.objects["b.0"].info
    assert info[0] == "err" and info[1].type_name == "WorkerCrashedError"
    assert "worker pid 4242" in info[1].message and "exit code 5" in info[1].message
    assert cpu_load(g) == 0


def test_idle_lease_goes_back_and_frees_its_cpu():
    g = leasing(cpus=1)
    lid = lease_one(g)
    g.submit(spec("b"), None, 0)
    g.submit(spec("c"), None, 0)
    out = take(g)
    assert [(d if isinstance(d, int) else d[0]) for d, _ in out] == ["lease"]  # c waits for a CPU
    assert not g.return_lease(lid)  # busy: not now
    g.task_done(1, "b", [("b.0", ("inline", 2), ())], None)
    assert g.return_lease(lid)
    out = take(g)
    assert out[0] == (("lease", lid), (m.W_UNLEASE,))
    assert out[1][0] == 1 and out[1][1][0] == m.TASKS and out[1][1][1].task_id == "c"


def test_cancel_of_a_leased_task_signals_its_worker():
    g = leasing()
    lid = lease_one(g)
    g.submit(spec("b"), None, 0)
    take(g)
    g.cancel("b", force=True, recursive=True)
    assert take(g) == [(("lease", lid), (m.W_CANCEL, "b", True, 4242))]


def test_no_lease_for_tasks_with_refs_special_resources_or_other_hosts():
    g = leasing()
    g.submit(spec("a", cpus=2), b"code", 0)
    assert [msg[0] for _, msg in take(g)] == [m.TASKS]
    g = leasing()
    g.lease_host = "elsewhere"
    g.submit(spec("a"), b"code", 0)
    assert [msg[0] for _, msg in take(g)] == [m.TASKS]
    g = leasing()
    g.lease_host = None  # leasing off
    g.submit(spec("a"), b"code", 0)
    assert [msg[0] for _, msg in take(g)] == [m.TASKS]


def test_other_work_takes_the_idle_lease_back_at_once():
    # a 1-CPU node whose CPU the idle lease holds: a task of another shape (say, one that
    # needs a GPU) must not wait for the idle timeout of the lease
    g = leasing(cpus=1)
    lid = lease_one(g)
    g.submit(spec("big", cpus=1, strategy="SPREAD"), None, 0)  # not leasable: a strategy
    out = take(g)
    assert out[0] == (("lease", lid), (m.W_UNLEASE,))
    assert out[1][0] == 1 and out[1][1][0] == m.TASKS and out[1][1][1].task_id == "big"
    assert not g.leases and cpu_load(g) == UNIT


def test_a_consumer_is_never_sent_ahead_to_a_leased_producer():
    # the raylet does not know the task its leased worker runs: a consumer sent there to
    # wait for it would be bounced back at once, again and again
    g = leasing()
    lid = lease_one(g)
    g.submit(spec("p"), None, 0)
    g.submit(spec("c", deps=["p.0"]), None, 0)
    out = take(g)
    assert out == [(("lease", lid), (m.W_RUN, g.tasks["p"].spec, b"code", {}, ()))]
    g.task_done(1, "p", [("p.0", ("inline", 5), ())], None)
    out = take(g)
    assert out[0] == (("lease", lid), (m.W_UNLEASE,))  # other work: the idle lease goes back
    assert [(d, msg[0], msg[1].task_id) for d, msg in out[1:]] == [(1, m.TASKS, "c")]


def test_a_result_that_came_before_the_lease_was_lost_stands():
    g = leasing()
    lid = lease_one(g)
    g.submit(spec("b", retries=3), None, 0)
    take(g)
    g.task_done(1, "b", [("b.0", ("inline", 9), ())], None)  # its W_DONE, read first
    g.lease_lost(1, lid, "killed by signal 9", "rank 1")
    assert g.objects["b.0"].info == ("inline", 9) and g.stats["retried"] == 0
    assert take(g) == [] and cpu_load(g) == 0


def test_a_broken_lease_gets_no_more_tasks():
    g = leasing()
    lid = lease_one(g)
    g.lease_broken(lid)  # its connection closed; LEASE_LOST is on its way
    g.submit(spec("b"), None, 0)
    assert [(d, msg[0]) for d, msg in take(g)] == [(1, m.TASKS)]
    g.lease_lost(1, lid, "killed by signal 9", "rank 1")
    assert not g.leases
