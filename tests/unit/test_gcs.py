"""The GCS as a pure state machine: events in, messages out, invariants after each event."""

import pytest

from mpiray._control.gcs import GCS, PENDING, READY
from mpiray._options import UNIT
from mpiray._protocol import messages as m
from mpiray._protocol.messages import Failure, TaskSpec


class Checked(GCS):
    """Runs validate() after every public event, like dask's state machine tests."""

    def __getattribute__(self, name):
        attr = super().__getattribute__(name)
        if name in ("submit", "task_done", "put", "refs", "subscribe", "blocked", "unblocked", "copied",
                    "actor_died", "kill_actor"):
            def wrapped(*a, **k):
                out = attr(*a, **k)
                self.validate()
                return out
            return wrapped
        return attr


def make(nodes=1, cpus=2):
    g = Checked(pipeline=1.0)
    for r in range(1, nodes + 1):
        g.add_node(r, {"node_id": f"n{r}", "resources": {"CPU": cpus * UNIT}, "host": "h", "pid": 1})
    return g


def spec(tid, deps=(), cpus=1, retries=0, arg_refs=None, strategy="DEFAULT"):
    return TaskSpec(task_id=tid, name="f", func_id="F", args=None, args_ref=None, deps=tuple(deps),
                    return_ids=(f"{tid}.0",), demand={"CPU": cpus * UNIT}, max_retries=retries,
                    arg_refs=tuple(deps) if arg_refs is None else arg_refs, strategy=strategy)


def inline(v):
    return ("inline", v)


def take(g):
    out, g.out = g.out, []
    return out


def test_independent_task_is_dispatched_with_function_once():
    g = make()
    g.submit(spec("a"), b"code", 0)
    g.submit(spec("b"), None, 0)
    out = take(g)
    assert [(d, msg[0]) for d, msg in out] == [(1, m.TASKS), (1, m.TASKS)]
    assert out[0][1][2] == b"code" and out[1][1][2] is None


def test_dependency_waits_then_carries_inline_value():
    g = make()
    g.submit(spec("a"), b"code", 0)
    g.submit(spec("b", deps=["a.0"], strategy="SPREAD"), None, 0)  # SPREAD: never sent early
    assert len(take(g)) == 1
    g.task_done(1, "a", [("a.0", inline(5), ())], None)
    out = take(g)
    assert len(out) == 1 and out[0][1][3] == {"a.0": inline(5)}


def test_failure_propagates_without_running_dependents():
    g = make()
    g.submit(spec("a"), b"code", 0)
    g.submit(spec("b", deps=["a.0"], strategy="SPREAD"), None, 0)
    take(g)
    f = Failure("error", None, "ValueError", "x", "tb", "f", "rank 1")
    g.task_done(1, "a", [], f)
    assert take(g) == []
    assert g.objects["b.0"].info == ("err", f)


def test_failure_propagates_to_a_dependent_sent_early():
    g = make()
    g.submit(spec("a"), b"code", 0)
    g.submit(spec("b", deps=["a.0"]), None, 0)
    assert [msg[1].task_id for _, msg in take(g)] == ["a", "b"]
    f = Failure("error", None, "ValueError", "x", "tb", "f", "rank 1")
    g.task_done(1, "a", [], f)
    # the raylet hands b back: a made nothing there
    g.task_done(1, "b", [], Failure("lostdep", None, "ObjectLostError", "", "", "b", "", lost=("a.0",)))
    assert take(g) == []
    assert g.objects["b.0"].info == ("err", f)


def test_queue_drains_when_capacity_frees():
    g = make(cpus=1)
    for t in "abc":
        g.submit(spec(t), b"code", 0)
    assert len(take(g)) == 1
    g.task_done(1, "a", [("a.0", inline(1), ())], None)
    assert [msg[1].task_id for _, msg in take(g)] == ["b"]


def test_crash_is_retried_then_reported():
    g = make()
    g.submit(spec("a", retries=1), b"code", 0)
    take(g)
    crash = Failure("crash", None, "WorkerCrashedError", "died", "", "f", "rank 1", retryable=True)
    g.task_done(1, "a", [], crash)
    assert [msg[1].attempt for _, msg in take(g)] == [1]
    g.task_done(1, "a", [], crash)
    assert g.objects["a.0"].state == "failed"


def test_refcount_frees_and_pins_hold():
    g = make()
    g.put("p", ("shm", 1, 100), (), 0)
    g.submit(spec("a", deps=["p"]), b"code", 0)
    take(g)
    g.refs([("p", -1)])  # the driver dropped its ref, the pending task still pins it
    assert "p" in g.objects
    g.task_done(1, "a", [("a.0", inline(1), ())], None)
    assert "p" not in g.objects
    assert (1, (m.FREE, ["p"])) in take(g)


def test_contained_refs_live_as_long_as_their_container():
    g = make()
    g.put("inner", inline(1), (), 0)
    g.put("outer", inline([1]), ("inner",), 0)
    g.refs([("inner", -1)])
    assert "inner" in g.objects
    g.refs([("outer", -1)])
    assert "inner" not in g.objects and "outer" not in g.objects


def test_result_dropped_while_pending_is_freed_when_done():
    g = make()
    g.submit(spec("a"), b"code", 0)
    g.refs([("a.0", -1)])
    assert g.objects["a.0"].state == PENDING
    g.task_done(1, "a", [("a.0", ("shm", 1, 10), ())], None)
    assert "a.0" not in g.objects


def test_subscribe_answers_now_or_later():
    g = make()
    g.put("p", inline(3), (), 0)
    g.submit(spec("a"), b"code", 0)
    take(g)
    g.subscribe(2, ["p", "a.0"])
    assert take(g) == [(2, (m.OBJECTS, [("p", inline(3))]))]
    g.task_done(1, "a", [("a.0", inline(4), ())], None)
    assert (2, (m.OBJECTS, [("a.0", inline(4))])) in take(g)


def test_blocked_task_lets_children_run():
    g = make(cpus=1)
    g.submit(spec("parent"), b"code", 0)
    g.submit(spec("child"), None, 1)
    assert len(take(g)) == 1
    g.blocked(1, "parent")
    assert [msg[1].task_id for _, msg in take(g)] == ["child"]
    g.task_done(1, "child", [("child.0", inline(1), ())], None)
    g.unblocked(1, "parent")
    g.task_done(1, "parent", [("parent.0", inline(2), ())], None)
    assert g.objects["parent.0"].state == READY


def test_infeasible_submit_changes_nothing():
    g = make()
    with pytest.raises(ValueError):
        g.submit(spec("a", cpus=64), b"code", 0)
    assert g.tasks == {} and g.objects == {}


def test_locality_prefers_node_with_big_argument():
    g = make(nodes=2, cpus=4)
    g.put("big", ("shm", 2, 1 << 30), (), 0)
    g.submit(spec("a", deps=["big"]), b"code", 0)
    assert take(g)[0][0] == 2


def test_consumer_is_sent_early_to_the_rank_making_its_input():
    g = make(nodes=2, cpus=2)
    g.submit(spec("a"), b"code", 0)
    (rank_a, _), = take(g)
    g.submit(spec("b", deps=["a.0"]), None, 0)
    out = take(g)
    assert [(d, msg[1].task_id) for d, msg in out] == [(rank_a, "b")]
    assert out[0][1][3] == {"a.0": ("pending",)}


def test_early_sends_wait_for_room_and_resume_when_it_frees():
    g = make(nodes=1, cpus=1)  # pipeline 1.0: one task at a time on the only node
    g.submit(spec("a"), b"code", 0)
    g.submit(spec("b", deps=["a.0"]), None, 0)
    assert [msg[1].task_id for _, msg in take(g)] == ["a"]
    g.task_done(1, "a", [("a.0", inline(1), ())], None)
    out = take(g)
    assert [msg[1].task_id for _, msg in out] == ["b"] and out[0][1][3] == {"a.0": inline(1)}


def test_bounced_consumer_waits_for_its_input_again():
    g = make(nodes=1, cpus=4)
    g.submit(spec("a", retries=1), b"code", 0)
    g.submit(spec("b", deps=["a.0"]), None, 0)
    assert [msg[1].task_id for _, msg in take(g)] == ["a", "b"]
    crash = Failure("crash", None, "WorkerCrashedError", "died", "", "f", "", retryable=True)
    g.task_done(1, "a", [], crash)  # retried (and b may follow it again)
    g.task_done(1, "b", [], Failure("lostdep", None, "ObjectLostError", "", "", "b", "", lost=("a.0",)))
    out = take(g)
    assert "a" in [msg[1].task_id for _, msg in out]
    assert g.objects["a.0"].waiting_tasks.count("b") <= 1
    g.task_done(1, "a", [("a.0", inline(5), ())], None)
    if g.tasks["b"].state == "running":  # sent early again: finish it
        g.task_done(1, "b", [("b.0", inline(6), ())], None)
    else:
        (_, msg), = take(g)
        assert msg[1].task_id == "b" and msg[3] == {"a.0": inline(5)}
        g.task_done(1, "b", [("b.0", inline(6), ())], None)
    assert g.objects["b.0"].state == READY


def test_short_functions_get_deeper_node_queues():
    g = make(nodes=1, cpus=1)  # pipeline 1: one task in flight per CPU
    for i in range(3):
        g.submit(spec(f"t{i}"), b"F", 0)
    assert len(g.out) == 1  # unknown run time: the usual depth
    g.out.clear()
    g.task_done(1, "t0", [("t0.0", inline(1), ())], None, 0.0001)  # 100 us per task
    for i in range(3, 12):
        g.submit(spec(f"t{i}"), None, 0)
    assert len(g.out) == 11  # t1, t2 and the next nine all queue on the node at once
    assert g.scheduler.nodes[1].ntasks == 11
    g.out.clear()
    g.task_done(1, "t1", [("t1.0", inline(1), ())], None, 0.5)  # now slow: back to depth 1
    g.submit(spec("t12"), None, 0)
    assert g.out == []


def test_a_reduce_over_many_inputs_waits_at_rank_0():
    from mpiray._control.gcs import EARLY_MAX_PENDING

    n = EARLY_MAX_PENDING + 1
    g = make(nodes=1, cpus=n + 1)
    for i in range(n):
        g.submit(spec(f"m{i}"), b"code" if i == 0 else None, 0)
    assert len(take(g)) == n  # every map runs on the one node
    g.submit(spec("r", deps=[f"m{i}.0" for i in range(n)]), None, 0)
    assert take(g) == []  # too many pending inputs to be sent ahead
    for i in range(n):
        g.task_done(1, f"m{i}", [(f"m{i}.0", inline(i), ())], None)
    out = take(g)
    assert [msg[1].task_id for _, msg in out] == ["r"]
    assert out[0][1][3] == {f"m{i}.0": inline(i) for i in range(n)}


def test_only_an_object_a_waiting_driver_needs_wakes_it():
    g = make()
    for tid in "abc":
        g.submit(spec(tid), b"code" if tid == "a" else None, 0)
    take(g)
    g.changed = False
    g.watch[1] = {"c.0"}  # a get() waiting for c.0 first
    g.task_done(1, "a", [("a.0", inline(1), ())], None)
    assert not g.changed and g.objects["a.0"].state == READY
    g.watch[2] = None  # another thread's wait() for anything
    g.task_done(1, "b", [("b.0", inline(2), ())], None)
    assert g.changed
    g.changed = False
    del g.watch[2]
    g.task_done(1, "c", [], Failure("error", None, "E", "boom", "", "f", "rank 1"))
    assert g.changed and g.objects["c.0"].state != PENDING
    g.changed = False
    g.watch.clear()  # nobody registered: every change wakes (other waits rely on it)
    g.submit(spec("d"), None, 0)
    take(g)
    g.task_done(1, "d", [("d.0", inline(4), ())], None)
    assert g.changed
