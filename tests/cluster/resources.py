"""Resource scheduling on real ranks with declared GPUs (no GPU needed).

Run by test_resources.py under ``mpiexec -n 3``: two raylets, each declared
with 4 CPUs, 2 GPUs, 4 GiB of memory and one "nvme".
"""

import os
import time

import mpiray as ray
from mpiray import exceptions as rex

T = 60
GiB = 1 << 30


@ray.remote
def span(s=0.6):
    t0 = time.time()
    time.sleep(s)
    ctx = ray.get_runtime_context()
    return {"rank": ctx.rank, "t0": t0, "t1": time.time(), "cvd": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "gpus": ray.get_gpu_ids(), "assigned": ctx.get_assigned_resources(), "node": ctx.get_node_id()}


def max_overlap(spans):
    """Most tasks running at once, per rank."""
    out = {}
    for rank in {s["rank"] for s in spans}:
        events = sorted([(s["t0"], 1) for s in spans if s["rank"] == rank] +
                        [(s["t1"], -1) for s in spans if s["rank"] == rank], key=lambda e: (e[0], e[1]))
        cur = best = 0
        for _, d in events:
            cur += d
            best = max(best, cur)
        out[rank] = best
    return out


def scenario_node_resources_are_declared():
    nodes = ray.nodes()
    assert len(nodes) == 2
    for n in nodes:
        assert n["Resources"] == {"CPU": 4, "GPU": 2, "memory": 4 * GiB, "nvme": 1}, n
        assert n["GPUIDs"] == ["0", "1"]
    assert ray.cluster_resources() == {"CPU": 8, "GPU": 4, "memory": 8 * GiB, "nvme": 2}


def scenario_whole_gpus_are_distinct():
    out = ray.get([span.options(num_gpus=1).remote() for _ in range(4)], timeout=T)
    pairs = {(o["rank"], o["cvd"]) for o in out}
    assert len(pairs) == 4, out
    for o in out:
        assert o["cvd"] in ("0", "1") and o["gpus"] == [int(o["cvd"])] and o["assigned"]["GPU"] == 1
    assert max(max_overlap(out).values()) == 2


def scenario_two_gpus_per_task():
    out = ray.get([span.options(num_gpus=2).remote() for _ in range(2)], timeout=T)
    for o in out:
        assert sorted(o["gpus"]) == [0, 1] and o["cvd"] in ("0,1", "1,0"), o


def scenario_fractional_gpus_share_a_device():
    out = ray.get([span.options(num_gpus=0.5, num_cpus=0.5).remote(1.0) for _ in range(8)], timeout=T)
    per_device = {}
    for o in out:
        per_device.setdefault((o["rank"], o["cvd"]), []).append(o)
        assert o["assigned"]["GPU"] == 0.5
    assert len(per_device) == 4 and all(len(v) == 2 for v in per_device.values()), per_device.keys()
    assert max(max_overlap(out).values()) == 4  # two halves on each of two GPUs, per node


def scenario_memory_limits_concurrency():
    out = ray.get([span.options(memory=3 * GiB).remote(0.5) for _ in range(4)], timeout=T)
    assert max_overlap(out) == {1: 1, 2: 1}, max_overlap(out)


def scenario_custom_resource_limits_concurrency():
    out = ray.get([span.options(resources={"nvme": 1}).remote(0.5) for _ in range(4)], timeout=T)
    assert max_overlap(out) == {1: 1, 2: 1}, max_overlap(out)


def scenario_cpus_limit_concurrency():
    out = ray.get([span.options(num_cpus=2).remote(0.5) for _ in range(6)], timeout=T)
    assert max(max_overlap(out).values()) == 2


def scenario_spread_uses_every_node():
    out = ray.get([span.options(scheduling_strategy="SPREAD", num_cpus=0.1).remote(0.2) for _ in range(4)],
                  timeout=T)
    ranks = sorted(o["rank"] for o in out)
    assert ranks == [1, 1, 2, 2], ranks


def scenario_node_affinity():
    target = [n for n in ray.nodes() if n["Rank"] == 2][0]["NodeID"]
    hard = ray.NodeAffinitySchedulingStrategy(target)
    out = ray.get([span.options(scheduling_strategy=hard).remote(0.1) for _ in range(6)], timeout=T)
    assert {o["rank"] for o in out} == {2}
    soft = ray.NodeAffinitySchedulingStrategy("no-such-node", soft=True)
    assert ray.get(span.options(scheduling_strategy=soft).remote(0), timeout=T)["rank"] in (1, 2)
    try:
        span.options(scheduling_strategy=ray.NodeAffinitySchedulingStrategy("no-such-node")).remote()
    except rex.InfeasibleResourceError as e:
        assert "no-such-node" in str(e)
    else:
        raise AssertionError("hard affinity to an unknown node must fail at once")


def scenario_infeasible_requests_fail_fast():
    t0 = time.monotonic()
    for opts in ({"num_gpus": 3}, {"memory": 5 * GiB}, {"resources": {"nvme": 2}}, {"num_cpus": 5}):
        try:
            span.options(**opts).remote()
        except rex.InfeasibleResourceError as e:
            assert "rank 1" in str(e) and "rank 2" in str(e), e
        else:
            raise AssertionError(f"{opts} must be infeasible")
    assert time.monotonic() - t0 < 1


def scenario_available_resources_while_running():
    refs = [span.options(num_gpus=1).remote(2.0) for _ in range(3)]
    time.sleep(1.0)
    avail = ray.available_resources()
    assert avail.get("GPU", 0) == 1, avail
    ray.get(refs, timeout=T)
    end = time.monotonic() + 5
    while ray.available_resources().get("GPU") != 4 and time.monotonic() < end:
        time.sleep(0.05)
    assert ray.available_resources()["GPU"] == 4


def scenario_nested_tasks_are_placed_locally():
    @ray.remote
    def child(i):
        return ray.get_runtime_context().rank

    @ray.remote(num_cpus=1)
    def parent():
        me = ray.get_runtime_context().rank
        ranks = [ray.get(child.remote(i)) for i in range(20)]  # one at a time: always fits here
        return me, ranks

    me, ranks = ray.get(parent.remote(), timeout=T)
    assert ranks.count(me) == len(ranks), (me, ranks)


if __name__ == "__main__":
    from _runner import run_scenarios

    run_scenarios(globals())
