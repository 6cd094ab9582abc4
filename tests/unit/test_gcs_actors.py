"""The GCS's actor table as a pure state machine (``_control/actors.py``): creation, calls
in order, death, restarts, kill, handles dropped.  Events in, messages out, invariants after
each event (``Checked`` from test_gcs)."""

import pytest

from mpiray._options import UNIT
from mpiray._protocol import messages as m
from mpiray._protocol.messages import ACTOR_INIT, Failure, TaskSpec

from test_gcs import inline, make, take

ERR = Failure("error", None, "ValueError", "bad start", "Traceback: ...", "C.__init__", "rank 1")
CRASH = Failure("crash", None, "WorkerCrashedError", "died", "", "C.__init__", "rank 1", retryable=True)


def creation(aid="A", cpus=1, name="", restarts=0, task_retries=0, deps=()):
    return TaskSpec(task_id=aid, name="C.__init__", func_id="CLS", args=None, args_ref=None,
                    deps=tuple(deps), return_ids=(f"{aid}.0",),
                    demand={"CPU": cpus * UNIT} if cpus else {}, max_retries=0,
                    arg_refs=tuple(deps), actor=aid, method=ACTOR_INIT,
                    actor_opts=("C", {"f": 1}, name, restarts, task_retries))


def call(tid, aid="A", deps=()):
    return TaskSpec(task_id=tid, name="C.f", func_id="CLS", args=None, args_ref=None, deps=tuple(deps),
                    return_ids=(f"{tid}.0",), demand={}, max_retries=0,
                    arg_refs=tuple(deps) + (f"{aid}.0",), actor=aid, method="f")


def sent_tasks(out):
    return [msg[1].task_id for _, msg in out if msg[0] == m.TASKS]


def alive(g, aid="A", **kw):
    g.submit(creation(aid, **kw), b"cls", 0)
    out = take(g)
    rank = out[0][0]
    g.task_done(rank, aid, [(f"{aid}.0", inline(None), ())], None)
    return rank


def test_calls_wait_for_creation_then_go_in_order_and_the_actor_holds_its_cpu():
    g = make(nodes=1, cpus=2)
    g.submit(creation(), b"cls", 0)
    g.submit(call("c1"), None, 0)
    g.submit(call("c2"), None, 0)
    assert sent_tasks(take(g)) == ["A"]  # calls wait for the actor
    g.task_done(1, "A", [("A.0", inline(None), ())], None)
    assert sent_tasks(take(g)) == ["c1", "c2"]
    assert g.actors["A"].state == "alive"
    node = g.scheduler.nodes[1]
    assert node.load.get("CPU") == UNIT and node.ntasks == 0  # held; the creation task is over
    g.task_done(1, "c1", [("c1.0", inline(1), ())], None)
    assert g.objects["c1.0"].state == "ready" and node.load.get("CPU") == UNIT


def test_a_call_waiting_for_an_input_holds_up_the_calls_behind_it():
    g = make()
    alive(g)
    g.submit(TaskSpec(task_id="p", name="p", func_id="P", args=None, args_ref=None, deps=(),
                      return_ids=("p.0",), demand={"CPU": UNIT}), b"p", 0)
    take(g)
    g.submit(call("c1", deps=["p.0"]), None, 0)
    g.submit(call("c2"), None, 0)
    assert sent_tasks(take(g)) == []
    g.task_done(1, "p", [("p.0", inline(3), ())], None)
    assert sent_tasks(take(g)) == ["c1", "c2"]


def test_constructor_error_kills_the_actor_fails_its_calls_and_frees_its_cpu():
    g = make()
    g.submit(creation(), b"cls", 0)
    g.submit(call("c1"), None, 0)
    take(g)
    g.task_done(1, "A", [], ERR)
    assert g.actors["A"].state == "dead"
    info = g.objects["c1.0"].info
    assert info[0] == "err" and info[1].kind == "actor" and "bad start" in info[1].message
    assert g.scheduler.nodes[1].load.get("CPU", 0) == 0
    g.submit(call("c2"), None, 0)  # later calls fail at once
    assert g.objects["c2.0"].info[1].kind == "actor" and take(g) == []


def test_worker_death_restarts_the_actor_and_requeues_the_calls_it_had_not_started():
    g = make()
    alive(g, restarts=1)
    for t in ("c1", "c2", "c3"):
        g.submit(call(t), None, 0)
    assert sent_tasks(take(g)) == ["c1", "c2", "c3"]
    g.actor_died(1, "A", "its worker died: killed by SIGKILL", "c1", ["c2", "c3"])
    assert g.objects["c1.0"].info[1].kind == "actor"  # it ran: max_task_retries=0
    assert g.scheduler.nodes[1].load.get("CPU", 0) == UNIT  # released, then taken by the restart
    out = take(g)
    assert sent_tasks(out) == ["A"] and out[0][1][1].return_ids == ()
    g.task_done(1, "A", [], None)
    assert sent_tasks(take(g)) == ["c2", "c3"]
    g.actor_died(1, "A", "died again", "c2", ["c3"])  # no restart left
    assert g.actors["A"].state == "dead"
    assert {g.objects[f"{t}.0"].info[1].kind for t in ("c2", "c3")} == {"actor"}
    assert g.scheduler.nodes[1].load.get("CPU", 0) == 0


def test_max_task_retries_runs_the_interrupted_call_again_first():
    g = make()
    alive(g, restarts=-1, task_retries=1)
    g.submit(call("c1"), None, 0)
    g.submit(call("c2"), None, 0)
    take(g)
    g.actor_died(1, "A", "died", "c1", ["c2"])
    take(g)
    g.task_done(1, "A", [], None)
    assert sent_tasks(take(g)) == ["c1", "c2"]
    g.actor_died(1, "A", "died", "c1", ["c2"])  # its one retry is used
    assert g.objects["c1.0"].info[1].kind == "actor" and g.objects["c1.0"].state == "failed"


def test_crash_during_creation_uses_a_restart():
    g = make()
    g.submit(creation(restarts=1), b"cls", 0)
    take(g)
    g.task_done(1, "A", [], CRASH)
    assert sent_tasks(take(g)) == ["A"]
    g.task_done(1, "A", [], CRASH)
    assert g.actors["A"].state == "dead" and g.objects["A.0"].state == "failed"


def test_kill_fails_queued_calls_and_ends_the_worker():
    g = make()
    alive(g)
    g.submit(call("c1"), None, 0)
    take(g)
    g.kill_actor("A")
    assert take(g) == [(1, (m.KILL_ACTOR, "A"))]
    g.submit(call("c2"), None, 0)
    assert "killed" in g.objects["c2.0"].info[1].message
    g.actor_died(1, "A", "killed by SIGKILL", "c1", [])
    assert "mpiray.kill" in g.objects["c1.0"].info[1].message
    assert g.scheduler.nodes[1].load.get("CPU", 0) == 0


def test_kill_while_creating_cancels_the_creation():
    g = make()
    g.submit(creation(), b"cls", 0)
    take(g)
    g.kill_actor("A")
    assert take(g) == [(1, (m.CANCEL, "A", True))]
    g.task_done(1, "A", [], CRASH)
    assert g.actors["A"].state == "dead" and g.scheduler.nodes[1].load.get("CPU", 0) == 0


def test_dropping_every_handle_ends_the_actor_after_its_pending_calls():
    g = make()
    alive(g)
    g.submit(call("c1"), None, 0)
    take(g)
    g.refs([("A.0", -1)])  # the driver's handle is gone; c1 still pins the actor
    assert g.actors["A"].state == "alive"
    g.task_done(1, "c1", [("c1.0", inline(1), ())], None)
    assert g.actors["A"].state == "dead" and take(g) == [(1, (m.KILL_ACTOR, "A"))]


def test_names_are_unique_and_kept_until_kill():
    g = make()
    alive(g, name="counter")
    with pytest.raises(ValueError, match="already exists"):
        g.submit(creation("B", name="counter"), b"cls", 0)
    assert "B" not in g.tasks and "B.0" not in g.objects  # refused before any change
    g.refs([("A.0", -1)])  # a named actor outlives its handles
    assert g.lookup_actor("counter")[0] == "A"
    g.kill_actor("A")
    assert g.lookup_actor("counter") is None and "A.0" not in g.objects


def test_a_call_the_raylet_refused_waits_for_the_restart():
    g = make()
    alive(g, restarts=1)
    g.submit(call("c1"), None, 0)
    take(g)
    g.actor_died(1, "A", "died", None, [])
    refused = Failure("actor", None, "ActorDiedError", "not here", "", "C.f", "rank 1")
    g.task_done(1, "c1", [], refused)
    take(g)
    g.task_done(1, "A", [], None)
    assert sent_tasks(take(g)) == ["c1"]


def test_calls_of_an_unknown_actor_fail():
    g = make()
    g.submit(call("c1", aid="Z"), None, 0)
    assert g.objects["c1.0"].info[1].kind == "actor" and take(g) == []


def test_tasks_and_creations_never_queue_behind_what_an_actor_holds():
    from test_gcs import Checked, spec

    g = Checked(pipeline=2.0)  # a node's queue may hold twice its CPUs...
    g.add_node(1, {"node_id": "n1", "resources": {"CPU": 2 * UNIT}, "host": "h", "pid": 1})
    g.submit(creation("A", cpus=2), b"cls", 0)
    g.submit(creation("B", cpus=1), b"cls", 0)  # creations go only where there is room now
    assert sent_tasks(take(g)) == ["A"]
    g.task_done(1, "A", [("A.0", inline(None), ())], None)
    g.submit(spec("t"), b"f", 0)  # ... but not behind an actor that holds them all
    assert take(g) == []
    g.kill_actor("A")
    take(g)
    g.actor_died(1, "A", "killed", None, [])
    assert sorted(sent_tasks(take(g))) == ["B", "t"]


REFUSED = Failure("actor", None, "ActorDiedError", "not here", "", "C.f", "rank 1")


def test_calls_on_their_way_to_a_dead_worker_queue_again_in_submission_order():
    g = make(nodes=2)
    rank = alive(g, restarts=1)
    for t in ("c0", "c1", "c2", "c3"):
        g.submit(call(t), None, 0)
    take(g)
    # c0 was running, c1 queued there; c2 and c3 arrive after the death and are refused
    g.actor_died(rank, "A", "died", None, ["c0", "c1"])
    g.task_done(rank, "c2", [], REFUSED)
    g.task_done(rank, "c3", [], REFUSED)
    assert list(g.actors["A"].order) == ["c0", "c1", "c2", "c3"]
    out = take(g)
    new = [r for r, msg in out if msg[0] == m.TASKS][0]
    g.task_done(new, "A", [], None)
    assert sent_tasks(take(g)) == ["c0", "c1", "c2", "c3"]


def test_a_cancelled_call_does_not_run_after_a_restart():
    g = make()
    alive(g, restarts=1)
    g.submit(call("c1"), None, 0)
    g.submit(call("c2"), None, 0)
    take(g)
    g.cancel("c2", False, False)
    take(g)
    g.actor_died(1, "A", "died", "c1", ["c2"])
    take(g)
    g.task_done(1, "A", [], None)
    assert "c2" not in sent_tasks(take(g))
    assert g.objects["c2.0"].info[1].kind == "cancelled"


def test_a_call_whose_input_is_being_rebuilt_waits_for_it():
    from test_gcs import spec

    g = make(nodes=2)
    g.submit(spec("p", retries=3), b"p", 0)
    prank = take(g)[0][0]
    g.task_done(prank, "p", [("p.0", ("shm", prank, 10 << 20), ())], None)
    g.submit(creation(), b"cls", 0)
    arank = take(g)[0][0]
    g.submit(call("c1", deps=["p.0"]), None, 0)
    g.submit(call("c2"), None, 0)
    g.object_lost("p.0")  # p runs again: p.0 is pending while c1 waits for the actor
    take(g)
    g.task_done(arank, "A", [("A.0", inline(None), ())], None)
    assert sent_tasks(take(g)) == []  # c1 waits for its input; c2 behind it
    g.task_done(prank, "p", [("p.0", inline(4), ())], None)
    out = take(g)
    assert sent_tasks(out) == ["c1", "c2"] and out[0][1][3] == {"p.0": inline(4)}


def test_a_recursive_force_cancel_interrupts_calls_without_killing_the_actor():
    from test_gcs import spec

    g = make(nodes=2)
    rank = alive(g)
    g.submit(spec("parent"), b"p", 0)
    take(g)
    child = call("c1")
    child.parent = "parent"
    g.submit(child, None, 0)
    take(g)
    g.cancel("parent", True, True)
    out = take(g)
    assert (rank, (m.CANCEL, "c1", False)) in out and (rank, (m.CANCEL, "c1", True)) not in out


def test_a_creation_whose_input_failed_leaves_a_dead_actor_and_frees_its_name():
    from test_gcs import spec

    g = make()
    g.submit(spec("bad"), b"b", 0)
    take(g)
    g.submit(creation(name="n", deps=["bad.0"]), b"cls", 0)
    g.submit(call("c1"), None, 0)
    g.task_done(1, "bad", [], Failure("error", None, "KeyError", "k", "tb", "bad", "rank 1"))
    assert g.actors["A"].state == "dead" and g.lookup_actor("n") is None
    assert "argument of its constructor" in g.objects["c1.0"].info[1].message


def producer(g, tid):
    g.submit(TaskSpec(task_id=tid, name="p", func_id="P", args=None, args_ref=None, deps=(),
                      return_ids=(f"{tid}.0",), demand={"CPU": UNIT}), b"p", 0)


def test_a_call_that_ends_before_it_is_sent_lets_the_calls_behind_it_go():
    g = make(nodes=1, cpus=4)
    alive(g)
    producer(g, "p")
    take(g)
    g.submit(call("c1", deps=["p.0"]), None, 0)
    g.submit(call("c2"), None, 0)
    assert sent_tasks(take(g)) == []
    g.task_done(1, "p", [], Failure("error", None, "ValueError", "x", "", "p", "rank 1"))
    assert sent_tasks(take(g)) == ["c2"]
    g.submit(call("c3", deps=["c2.0"]), None, 0)  # (waits: c2 is not done)
    g.submit(call("c4"), None, 0)
    g.cancel("c3", False, False)
    assert sent_tasks(take(g)) == ["c4"]


def test_a_restart_after_calls_ended_in_the_queue_keeps_the_others_in_order():
    g = make(nodes=1, cpus=4)
    alive(g, restarts=1)
    producer(g, "p1")
    producer(g, "p2")
    take(g)
    g.submit(call("c0"), None, 0)
    g.submit(call("c1", deps=["p1.0"]), None, 0)
    g.submit(call("c2", deps=["p2.0"]), None, 0)
    assert sent_tasks(take(g)) == ["c0"]
    g.cancel("c2", False, False)  # over, its id still in the queue
    g.actor_died(1, "A", "crash", None, ["c0"])
    assert list(g.actors["A"].order) == ["c0", "c1"]


def test_a_handed_back_call_raises_the_epoch_so_calls_sent_before_are_refused():
    g = make()
    alive(g)
    g.put("x", ("shm", 1, 10 << 20), (), 0)
    g.submit(call("c1", deps=["x"]), None, 0)
    g.submit(call("c2"), None, 0)
    out = take(g)
    assert [msg[4] for _, msg in out] == [0, 0]
    lost = Failure("lostdep", None, "ObjectLostError", "lost", "", "C.f", "rank 1", lost=("x",))
    g.task_done(1, "c1", [], lost)  # (x cannot be rebuilt: c1 fails, and c2 goes again after)
    g.task_done(1, "c2", [], REFUSED)
    out = take(g)
    assert sent_tasks(out) == ["c2"] and out[0][1][4] == 2
    assert g.objects["c1.0"].state == "failed"


def test_kill_while_creating_keeps_no_pin_on_the_constructors_arguments():
    g = make(nodes=1, cpus=4)
    g.put("x", inline(1), (), 0)
    g.submit(creation(deps=["x"], restarts=1), b"cls", 0)
    g.refs([("x", -1)])
    take(g)
    g.kill_actor("A")
    g.task_done(1, "A", [("A.0", inline(None), ())], None)  # done before the CANCEL arrived
    g.actor_died(1, "A", "killed", None, [])
    g.refs([("A.0", -1)])
    assert "x" not in g.objects


def test_get_if_exists_names_the_live_actor_and_makes_none():
    g = make()
    alive(g, name="n")
    spec = creation("B", name="n")
    spec.actor_opts = spec.actor_opts + (True,)
    g.submit(spec, b"cls", 0)
    assert take(g) == [] and "B" not in g.tasks and g.objects["B.0"].state == "ready"
    g.submit(call("c1", aid="B"), None, 0)
    out = take(g)
    assert sent_tasks(out) == ["c1"] and out[0][1][1].actor == "A"


def test_a_stream_of_tasks_cannot_keep_a_waiting_creation_from_starting():
    from test_gcs import Checked, spec

    g = Checked(pipeline=2.0)
    g.add_node(1, {"node_id": "n1", "resources": {"CPU": 2 * UNIT}, "host": "h", "pid": 1})
    for i in range(6):  # 2 running, 2 queued on the node, 2 waiting here
        g.submit(spec(f"t{i}"), b"f" if i == 0 else None, 0)
    g.submit(creation("A", cpus=1), b"cls", 0)
    running = sent_tasks(take(g))
    assert "A" not in running
    n = 6
    for step in range(6):  # each task that ends is replaced by a new one
        g.task_done(1, running.pop(0), [], None)
        g.submit(spec(f"t{n}"), None, 0)
        n += 1
        new = sent_tasks(take(g))
        running += new
        if "A" in new:
            break
    assert "A" in running and step <= 3, (step, running)
