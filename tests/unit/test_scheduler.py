import pytest

from mpiray._control.scheduler import GlobalScheduler
from mpiray._options import NodeAffinity, UNIT
from mpiray.exceptions import InfeasibleResourceError


def cluster(*nodes, pipeline=2.0):
    s = GlobalScheduler(pipeline)
    for rank, res in enumerate(nodes, start=1):
        s.add_node(rank, f"n{rank}", {k: v * UNIT for k, v in res.items()})
    return s


def test_fills_capacity_everywhere_before_queueing_deeper():
    s = cluster({"CPU": 2}, {"CPU": 2})
    placed = []
    for _ in range(4):
        r = s.place({"CPU": UNIT})
        s.acquire(r, {"CPU": UNIT})
        placed.append(r)
    assert sorted(placed) == [1, 1, 2, 2]


def test_pipeline_limit_then_none():
    s = cluster({"CPU": 1}, pipeline=2.0)
    for _ in range(2):
        r = s.place({"CPU": UNIT})
        assert r == 1
        s.acquire(r, {"CPU": UNIT})
    assert s.place({"CPU": UNIT}) is None
    s.release(1, {"CPU": UNIT})
    assert s.place({"CPU": UNIT}) == 1


def test_gpu_tasks_go_to_gpu_nodes_and_spread_over_them():
    s = cluster({"CPU": 4}, {"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1})
    d = {"CPU": UNIT, "GPU": UNIT}
    a = s.place(d)
    s.acquire(a, d)
    b = s.place(d)
    assert {a, b} == {2, 3}


def test_infeasible_lists_request_and_nodes():
    s = cluster({"CPU": 2}, {"CPU": 2, "GPU": 1})
    with pytest.raises(InfeasibleResourceError) as info:
        s.place({"GPU": 2 * UNIT})
    msg = str(info.value)
    assert "GPU: 2" in msg and "rank 1" in msg and "rank 2" in msg
    with pytest.raises(InfeasibleResourceError):
        s.check_feasible({"nvme": UNIT}, "DEFAULT")


def test_fractional_gpus_share():
    s = cluster({"CPU": 4, "GPU": 1}, pipeline=1.0)
    d = {"GPU": UNIT // 2}
    for _ in range(2):
        r = s.place(d)
        assert r == 1
        s.acquire(r, d)
    assert s.place(d) is None


def test_spread_round_robins():
    s = cluster({"CPU": 8}, {"CPU": 8}, {"CPU": 8})
    seen = []
    for _ in range(6):
        r = s.place({"CPU": UNIT}, "SPREAD")
        s.acquire(r, {"CPU": UNIT})
        seen.append(r)
    assert sorted(seen) == [1, 1, 2, 2, 3, 3]


def test_node_affinity_hard_and_soft():
    s = cluster({"CPU": 1}, {"CPU": 1}, pipeline=1.0)
    assert s.place({"CPU": UNIT}, NodeAffinity("n2")) == 2
    s.acquire(2, {"CPU": UNIT})
    assert s.place({"CPU": UNIT}, NodeAffinity("n2")) is None  # hard: wait for n2
    assert s.place({"CPU": UNIT}, NodeAffinity("n2", soft=True)) == 1
    with pytest.raises(InfeasibleResourceError):
        s.place({"CPU": UNIT}, NodeAffinity("nope"))


def test_locality_preference():
    s = cluster({"CPU": 2}, {"CPU": 2})
    assert s.place({"CPU": UNIT}, preferred=(2,)) == 2


def test_blocked_task_frees_cpu():
    s = cluster({"CPU": 1}, pipeline=1.0)
    s.acquire(1, {"CPU": UNIT})
    assert s.place({"CPU": UNIT}) is None
    s.block(1, {"CPU": UNIT})
    assert s.place({"CPU": UNIT}) == 1
    s.unblock(1, {"CPU": UNIT})
    assert s.available() == {"CPU": 0}
