"""Object-plane scenarios: pulls over MPI RMA, hops, refs in objects, freeing, spilling.

Run by test_objects.py under ``mpiexec -n 4`` with ``MPIRAY_SHARE_HOST_MEMORY=0``,
so every rank acts as its own host and objects really move with one-sided Gets.
"""

import glob
import hashlib
import os
import time

import numpy as np

import mpiray as ray

T = 120
MiB = 1 << 20


def node(rank):
    return ray.NodeAffinitySchedulingStrategy([n for n in ray.nodes() if n["Rank"] == rank][0]["NodeID"])


@ray.remote
def make(nbytes, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, nbytes, dtype=np.uint8)


@ray.remote
def digest(x):
    return hashlib.sha256(memoryview(np.ascontiguousarray(x))).hexdigest(), ray.get_runtime_context().rank


def expected(nbytes, seed):
    return hashlib.sha256(np.random.default_rng(seed).integers(0, 256, nbytes, dtype=np.uint8)).hexdigest()


@ray.remote
def gc_settings():
    import gc

    return gc.get_threshold()


def scenario_forked_workers_keep_the_interpreters_garbage_collection():
    # workers forked by a raylet's zygote (it has an arena here): the raylet makes no full
    # collection while busy, its workers run user code and must
    import gc

    assert ray.get([gc_settings.remote() for _ in range(6)], timeout=T) == [gc.get_threshold()] * 6


def scenario_pull_sizes_exact():
    ids = []
    for i, n in enumerate([1, 100 * 1024 + 1, MiB, 8 * MiB + 3, 64 * MiB, 256 * MiB]):
        x = make.options(scheduling_strategy=node(1)).remote(n, i)
        h, rank = ray.get(digest.options(scheduling_strategy=node(2)).remote(x), timeout=T)
        assert rank == 2 and h == expected(n, i), (n, rank)
        if n >= 64 * MiB:  # and to the driver, which pulls into rank 0's store
            assert hashlib.sha256(ray.get(x, timeout=T)).hexdigest() == expected(n, i)
        ids.append(x.id)
        del x
    # the 1-byte value travels inline; rank 2's arena holds half its 320 MiB store: the
    # others were Put straight into it, but for the 256 MiB one, pulled through staging
    ways = dict(_fetched_by({2})[2])
    assert [ways.get(oid) for oid in ids] == [None] + ["put"] * 4 + ["get"], [ways.get(oid) for oid in ids]


def _arena_state(ref, base=0):
    """(regions handed out beyond ``base``, whether rank 0's store holds a copy)"""
    rt = ray._api._rt()
    with rt.service.cond:
        return rt.arena.live() - base, 0 in rt.gcs.objects[ref.id].copies


def scenario_driver_reads_are_put_into_its_arena():
    rt = ray._api._rt()
    assert rt.arena is not None, "no delivery arena on rank 0 although every rank is its own host"
    base = rt.arena.live()
    for i, n in enumerate([100 * 1024 + 1, MiB, 8 * MiB + 3, 64 * MiB]):
        x = make.options(scheduling_strategy=node(1 + i % 3)).remote(n, 300 + i)
        v = ray.get(x, timeout=T)
        assert hashlib.sha256(v).hexdigest() == expected(n, 300 + i), n
        assert not v.flags.writeable
        assert _arena_state(x, base) == (1, False)  # in the arena, not pulled into rank 0's store
        again = ray.get(x, timeout=T)  # a value of it is alive: the same bytes, no new delivery
        assert again.ctypes.data == v.ctypes.data and _arena_state(x, base) == (1, False)
        del v, again
        assert _arena_state(x, base) == (0, False), "the region outlived every view of it"
        del x
    # several at once, and their regions freed when the values go
    xs = [make.options(scheduling_strategy=node(1 + i % 3)).remote(4 * MiB + i, 320 + i) for i in range(9)]
    vs = ray.get(xs, timeout=T)
    assert [hashlib.sha256(v).hexdigest() for v in vs] == [expected(4 * MiB + i, 320 + i) for i in range(9)]
    assert rt.arena.live() - base == 9
    del vs
    assert rt.arena.live() - base == 0


def scenario_driver_reads_from_several_threads():
    import threading

    rt = ray._api._rt()
    base = rt.arena.live()
    shared = make.options(scheduling_strategy=node(1)).remote(6 * MiB, 350)
    own = [make.options(scheduling_strategy=node(2 + i % 2)).remote(3 * MiB + i, 351 + i) for i in range(4)]
    ray.wait([shared, *own], num_returns=5, timeout=T)
    out, errors = {}, []

    def reader(i):
        try:
            for _ in range(5):
                a, b = ray.get([shared, own[i]], timeout=T)
                out[i] = (hashlib.sha256(a).hexdigest(), hashlib.sha256(b).hexdigest())
                del a, b
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(T)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert all(out[i] == (expected(6 * MiB, 350), expected(3 * MiB + i, 351 + i)) for i in range(4)), out
    assert rt.arena.live() == base
    with rt.service.cond:
        assert not rt.service.deliveries  # none left behind


def scenario_driver_read_too_big_for_the_arena_is_pulled():
    rt = ray._api._rt()
    base = rt.arena.live()
    held = ray.get(make.options(scheduling_strategy=node(1)).remote(rt.arena.size // 2 + MiB, 330), timeout=T)
    n = rt.arena.size // 2  # fits the arena alone, not beside the value held
    x = make.options(scheduling_strategy=node(2)).remote(n, 331)
    assert hashlib.sha256(ray.get(x, timeout=T)).hexdigest() == expected(n, 331)
    assert _arena_state(x, base) == (1, True)  # pulled into rank 0's store instead
    del held
    y = make.options(scheduling_strategy=node(3)).remote(rt.arena.size + 1, 332)
    assert hashlib.sha256(ray.get(y, timeout=T)).hexdigest() == expected(rt.arena.size + 1, 332)
    assert _arena_state(y, base) == (0, True)


def scenario_driver_read_of_a_lost_object_rebuilds_it():
    rt = ray._api._rt()
    base = rt.arena.live()
    x = make.options(scheduling_strategy=node(2)).remote(2 * MiB, 340)
    ray.wait([x], timeout=T)
    with rt.service.cond:
        info = rt.gcs.objects[x.id].info
        rebuilt = rt.gcs.stats["rebuilt"]
    os.unlink(rt.store.path(x.id, info[1]))  # its only copy is gone: the owner cannot Put it
    v = ray.get(x, timeout=T)
    assert hashlib.sha256(v).hexdigest() == expected(2 * MiB, 340)  # made again ...
    with rt.service.cond:
        assert rt.gcs.stats["rebuilt"] == rebuilt + 1  # ... once, by lineage
    assert _arena_state(x, base) == (1, False)  # and delivered, not pulled
    del v
    assert rt.arena.live() == base


def scenario_many_concurrent_pulls_one_copy_per_node():
    objs = [make.options(scheduling_strategy=node(1)).remote(2 * MiB, 100 + i) for i in range(12)]
    ray.wait(objs, num_returns=len(objs), timeout=T)
    reads = [digest.options(scheduling_strategy=node(r), num_cpus=0.1).remote(o)
             for o in objs for r in (2, 3, 2, 3)]
    out = ray.get(reads, timeout=T)
    for k, (h, _) in enumerate(out):
        assert h == expected(2 * MiB, 100 + k // 4)
    fetched = _fetched_by({2, 3})
    ids = {o.id for o in objs}
    for r in (2, 3):  # each node fetched each object once, straight into its arena
        mine = [(oid, way) for oid, way in fetched[r] if oid in ids]
        assert sorted(oid for oid, _ in mine) == sorted(ids), (r, mine)
        assert {way for _, way in mine} == {"put"}, mine


def _fetched_by(ranks):
    """rank -> [(object id, way)] of its recent pulls, once every rank in ``ranks`` has
    reported some with its heartbeat (every second)."""
    end = time.monotonic() + 10
    while True:
        got = {n["Rank"]: [(p["ObjectID"], p["Way"]) for p in n["RecentPulls"]] for n in ray.nodes()}
        if all(got.get(r) for r in ranks) or time.monotonic() > end:
            time.sleep(1.2)  # one more heartbeat: the last pulls of the batch
            return {n["Rank"]: [(p["ObjectID"], p["Way"]) for p in n["RecentPulls"]] for n in ray.nodes()}
        time.sleep(0.2)


@ray.remote
def keep(x):
    """Keep a view of the argument in this worker process, past the task."""
    import builtins

    builtins.mpiray_test_kept = x
    return os.getpid()


@ray.remote
def check_kept(pid):
    """The digest of the kept view, if this is the worker that kept it."""
    import builtins

    if os.getpid() != pid:
        return None
    return hashlib.sha256(memoryview(builtins.mpiray_test_kept)).hexdigest()


def scenario_views_kept_after_their_task_are_never_overwritten():
    x = make.options(scheduling_strategy=node(1)).remote(32 * MiB, 300)
    pid = ray.get(keep.options(scheduling_strategy=node(2)).remote(x), timeout=T)
    del x  # freed everywhere; the view in rank 2's worker still reads its region copy
    churn = []
    for i in range(8):  # 320 MiB through rank 2's 160 MiB arena: regions are reused
        y = make.options(scheduling_strategy=node(1)).remote(40 * MiB, 310 + i)
        h, _ = ray.get(digest.options(scheduling_strategy=node(2)).remote(y), timeout=T)
        assert h == expected(40 * MiB, 310 + i)
        churn.append(y.id)
        del y
    ways = dict(_fetched_by({2})[2])
    assert [ways.get(oid) for oid in churn].count("put") >= 6, [ways.get(oid) for oid in churn]
    for _ in range(60):  # rank 2 has two workers: ask until the keeper answers
        h = ray.get(check_kept.options(scheduling_strategy=node(2), num_cpus=0.1).remote(pid), timeout=T)
        if h is not None:
            assert h == expected(32 * MiB, 300)
            return
    raise AssertionError("the worker that kept the view never ran a task again")


def scenario_object_hops_across_nodes():
    @ray.remote
    def plus_one(x):
        return x + 1

    x = ray.put(np.zeros(4 * MiB, dtype=np.uint8))  # starts on rank 0 (the driver)
    for rank in (1, 2, 3, 1, 2):
        x = plus_one.options(scheduling_strategy=node(rank)).remote(x)
    out = ray.get(x, timeout=T)
    assert out.shape == (4 * MiB,) and int(out.min()) == 5 and int(out.max()) == 5


def scenario_refs_inside_objects():
    inner = make.options(scheduling_strategy=node(1)).remote(3 * MiB, 7)
    outer = ray.put({"payload": inner, "note": "nested"})

    @ray.remote
    def open_box(box):
        ref = box["payload"]
        assert isinstance(ref, ray.ObjectRef)  # refs inside other objects stay refs
        return digest.remote(ref)

    del inner  # only the box keeps it alive now
    h, _ = ray.get(ray.get(open_box.options(scheduling_strategy=node(3)).remote(outer), timeout=T), timeout=T)
    assert h == expected(3 * MiB, 7)


def _store_files():
    rt = ray._api._rt()
    return [p for p in glob.glob(os.path.join(rt.store.root, "r*", "*")) if not p.endswith(".tmp")]


def scenario_freed_objects_leave_the_stores():
    objs = [make.options(scheduling_strategy=node(1 + i % 3)).remote(MiB, i) for i in range(30)]
    ray.get([digest.options(scheduling_strategy=node(1 + (i + 1) % 3)).remote(o) for i, o in enumerate(objs)],
            timeout=T)
    ids = {o.id for o in objs}

    def theirs():
        return [p for p in _store_files() if os.path.basename(p) in ids]

    assert len(theirs()) >= 30  # each in its maker's store (copies pulled by staging too)
    del objs
    end = time.monotonic() + 15
    while theirs() and time.monotonic() < end:
        time.sleep(0.1)
    assert not theirs(), theirs()[:5]


def scenario_put_drop_loop_keeps_store_flat():
    rt = ray._api._rt()
    iters, size = int(os.environ.get("LOOP_ITERS", "10000")), int(os.environ.get("LOOP_MIB", "1")) * MiB
    arr = np.ones(size, dtype=np.uint8)
    peak = 0
    for i in range(iters):
        r = ray.put(arr)
        del r
        if i % 500 == 0:
            peak = max(peak, rt.store.used)
    end = time.monotonic() + 10
    while rt.store.used > 0 and time.monotonic() < end:
        time.sleep(0.05)
    assert rt.store.used == 0, rt.store.used
    parked = rt.store.pool.bytes()  # freed files kept warm for reuse: bounded, never objects
    assert parked <= rt.store.capacity // 2, f"{parked / MiB:.0f} MiB parked"
    assert peak <= 64 * size, f"store grew to {peak / MiB:.0f} MiB during the loop"


def scenario_spill_and_restore():
    # each node's store holds 320 MiB: twelve 32 MiB objects on rank 1 must spill
    objs = [make.options(scheduling_strategy=node(1)).remote(32 * MiB, 200 + i) for i in range(12)]
    hashes = ray.get([digest.options(scheduling_strategy=node(1)).remote(o) for o in objs], timeout=T)
    assert [h for h, _ in hashes] == [expected(32 * MiB, 200 + i) for i in range(12)]
    spill_dir = os.path.join(ray._api._rt().store.spill, "r1")
    assert os.path.isdir(spill_dir) and os.listdir(spill_dir), "nothing was spilled"
    # spilled objects come back, also across nodes and to the driver
    h, _ = ray.get(digest.options(scheduling_strategy=node(2)).remote(objs[0]), timeout=T)
    assert h == expected(32 * MiB, 200)
    assert hashlib.sha256(ray.get(objs[1], timeout=T)).hexdigest() == expected(32 * MiB, 201)


def scenario_locality_keeps_big_data_in_place():
    x = make.options(scheduling_strategy=node(3)).remote(16 * MiB, 9)
    ray.wait([x], timeout=T)
    ranks = {ray.get(digest.remote(x), timeout=T)[1] for _ in range(6)}
    assert ranks == {3}, ranks


if __name__ == "__main__":
    from _runner import run_scenarios

    run_scenarios(globals())
