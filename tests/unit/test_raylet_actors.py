"""A raylet's actors (``_node/actors.py``) without MPI: calls run in arrival order, and no
call passes one that was handed back for a lost input."""

import time
from collections import deque

from mpiray._node.actors import RayletActor
from mpiray._node.local import LocalObjects, LocalTask
from mpiray._node.raylet import Raylet
from mpiray._protocol import messages as m
from mpiray._protocol.messages import Failure

from test_gcs_actors import call


class Sent:
    def __init__(self):
        self.sent = []

    def send(self, dest, msg):
        self.sent.append((dest, msg))


class FakeWorker:
    def __init__(self):
        self.cancel_next = self.leased = self.task = self.get_req = None
        self.blocked, self.actor, self.refs, self.ahead = False, "A", {}, deque()


def raylet_with_actor():
    r = Raylet.__new__(Raylet)
    r.t, r.rank = Sent(), 1
    r._init_actors()
    r.waiting, r.interrupted, r.durations, r.dep_waiters = {}, set(), {}, {}
    r.local = LocalObjects()
    w = FakeWorker()
    r.actors["A"] = RayletActor(w, LocalTask(call("A"), {}))
    r.ran = []
    r._send_run = lambda worker, task: (r.ran.append(task.spec.task_id), setattr(worker, "task", task))
    return r, w


def arrive(r, tid, epoch=0, deps=()):
    task = LocalTask(call(tid, deps=deps), {})
    if r._call_arrived(task, epoch):
        r.waiting[tid] = task
        return task
    return None


def dones(r):
    return [(msg[1], msg[3].kind if msg[3] else None) for _, msg in r.t.sent if msg[0] == m.DONE]


def test_calls_run_one_at_a_time_in_arrival_order():
    r, w = raylet_with_actor()
    for t in ("c1", "c2"):
        arrive(r, t)
    r.actor_kick.add("A")
    r._pump_actors([])
    assert r.ran == ["c1"]
    r._pump_actors([])
    assert r.ran == ["c1"]  # busy
    w.task = None
    r.actor_kick.add("A")
    r._pump_actors([])
    assert r.ran == ["c1", "c2"]


def test_a_call_lost_on_arrival_refuses_the_calls_sent_before_rank_0_knew():
    r, _ = raylet_with_actor()
    c1 = arrive(r, "c1", deps=["x"])
    r._lost_dependency(c1, ["x"])  # its input's file is gone here
    assert arrive(r, "c2", epoch=0) is None  # on its way meanwhile: refused
    assert dones(r) == [("c1", "lostdep"), ("c2", "actor")]
    assert arrive(r, "c1", epoch=1) is not None  # sent again by rank 0, after it knew


def test_a_call_lost_on_the_worker_is_reported_before_the_calls_behind_it_go_back():
    r, w = raylet_with_actor()
    r.pool = type("P", (), {"alive": lambda self, w: True})()
    c1 = arrive(r, "c1", deps=["x"])
    arrive(r, "c2")
    r.actors["A"].fifo.popleft()
    w.task, c1.started = c1, time.monotonic()
    lost = Failure("lostdep", None, "ObjectLostError", "lost", "", "C.f", "rank 1", lost=("x",))
    r._worker_message(w, (m.W_DONE, "c1", [], lost))
    assert dones(r) == [("c1", "lostdep"), ("c2", "actor")]
    assert arrive(r, "c3", epoch=0) is None and arrive(r, "c1", epoch=1) is not None


def test_an_actor_releases_only_refs_it_took():
    r, w = raylet_with_actor()
    r._note_refs(w, [("old", -1), ("kept", 1), ("kept", 1), ("gone", 1), ("gone", -1)])
    assert w.refs == {"kept": 2}
    r._drop_worker_refs(w)
    assert r.t.sent == [(0, (m.REFS, [("kept", -2)]))]
