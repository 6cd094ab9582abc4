"""The free pool of big object files and the per-process mapping cache (_store/pool.py)."""

import fcntl
import os

import numpy as np
import pytest

from mpiray._serialization import dumps
from mpiray._store.pool import POOL_MAX_FILES, FreePool, MapCache
from mpiray._store.shm import Store, map_file, object_length, parse

MiB = 1 << 20


@pytest.fixture
def store(tmp_path):
    s = Store("unit", 1, str(tmp_path / "shm"), str(tmp_path / "disk"), capacity=64 * MiB)
    s.create()
    yield s
    s.destroy()


def _parked(s):
    return sorted(cap for cap, _, _ in s.pool.files())


def test_freed_file_is_parked_and_the_next_write_claims_it(store):
    size = store.write("a", dumps(np.full(2 * MiB, 1, np.uint8)))
    ino = os.stat(store.path("a")).st_ino
    store.delete("a")
    assert not store.exists("a") and _parked(store) == [size] and store.used == 0
    size_b = store.write("b", dumps(np.full(2 * MiB, 2, np.uint8)))
    assert size_b == size and os.stat(store.path("b")).st_ino == ino  # the same file, reused
    assert _parked(store) == [] and store.used == size
    assert (store.read("b", None) == 2).all()


def test_small_objects_and_stores_without_capacity_do_not_park(store, tmp_path):
    store.write("s", dumps(np.ones(1000, np.uint8)))
    store.delete("s")
    worker = Store("unit", 1, str(tmp_path / "shm"), str(tmp_path / "disk"))  # a worker's view
    worker.write("w", dumps(np.ones(2 * MiB, np.uint8)))
    worker.delete("w")
    assert _parked(store) == [] and os.listdir(store.dir) == []


def test_a_mapped_file_is_not_recycled_and_its_reader_keeps_its_bytes(store):
    store.write("a", dumps(np.full(4 * MiB, 5, np.uint8)))
    arr = store.read("a", None)
    store.delete("a")  # a reader holds a view: unlinked, not parked
    assert _parked(store) == [] and not store.exists("a")
    store.write("b", dumps(np.full(4 * MiB, 9, np.uint8)))
    assert (arr == 5).all()
    del arr  # the pin goes with the last view
    store.delete("b")
    assert len(_parked(store)) == 1


def test_the_reader_pin_is_a_shared_flock_that_lives_with_the_view(store):
    store.write("a", dumps(np.ones(2 * MiB, np.uint8)))
    view = map_file(store.path("a"))
    with open(store.path("a"), "rb") as f:
        with pytest.raises(BlockingIOError):
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        view.release()
        del view
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_recycled_file_can_be_longer_than_its_object(store):
    big = store.write("a", dumps(np.full(3 * MiB, 1, np.uint8)))
    store.delete("a")
    value = np.arange(2 * MiB + 123, dtype=np.uint8)
    assert store.write("b", dumps(value)) == big  # 3 MiB file for a 2 MiB object
    assert os.path.getsize(store.path("b")) == big
    assert np.array_equal(store.read("b", None), value)
    view = store.pin_raw("b")  # what a push sends: the object, not the file
    try:
        assert view.nbytes == object_length(view) < big
        data, bufs = parse(view)
        assert bufs[0].nbytes == value.nbytes
    finally:
        view.release()


def test_claim_picks_the_smallest_file_that_fits_and_not_a_far_bigger_one(tmp_path):
    pool = FreePool(str(tmp_path))
    os.makedirs(pool.dir)
    for cap in (2 * MiB, 3 * MiB, 8 * MiB):
        with open(os.path.join(pool.dir, f"{cap}.{cap}.1"), "wb") as f:
            f.truncate(cap)
    assert pool.claim(10 * MiB, str(tmp_path / "x")) is None  # none big enough
    assert pool.claim(5 * MiB // 2, str(tmp_path / "a")) == 3 * MiB
    assert pool.claim(3 * MiB // 2, str(tmp_path / "b")) == 2 * MiB
    assert pool.claim(3 * MiB // 2, str(tmp_path / "c")) is None  # 8 MiB is too wasteful
    assert pool.claim(4 * MiB, str(tmp_path / "d")) == 8 * MiB
    assert pool.files() == []


def test_pool_is_bounded_and_trimmed_oldest_first(tmp_path):
    s = Store("unit", 1, str(tmp_path / "shm"), str(tmp_path / "disk"), capacity=40 * MiB)
    s.create()
    ids = [f"o{i}" for i in range(6)]
    sizes = [s.write(oid, dumps(np.full(4 * MiB, i, np.uint8))) for i, oid in enumerate(ids)]
    for oid in ids:
        s.delete(oid)  # half of 40 MiB holds four of them: the oldest go
    assert _parked(s) == sizes[:4] and s.pool.bytes() <= s.capacity // 2
    # a write that would exceed capacity trims parked files before spilling anything
    s.write("big", dumps(np.ones(30 * MiB, np.uint8)))
    s.write("big2", dumps(np.ones(5 * MiB, np.uint8)))
    assert s.used + s.pool.bytes() <= s.capacity and not s.spilled
    s.destroy()


def test_pool_holds_a_bounded_number_of_files(tmp_path):
    pool = FreePool(str(tmp_path))
    for i in range(POOL_MAX_FILES + 3):
        p = str(tmp_path / f"f{i}")
        with open(p, "wb") as f:
            f.truncate(MiB)
        assert pool.park(p, 1 << 40)
    assert len(pool.files()) == POOL_MAX_FILES


def test_spilled_objects_are_never_parked(tmp_path):
    s = Store("unit", 1, str(tmp_path / "shm"), str(tmp_path / "disk"), capacity=16 * MiB)
    s.create()
    for i in range(4):
        s.write(f"o{i}", dumps(np.full(5 * MiB, i, np.uint8)))
    assert s.spilled
    spilled = next(iter(s.spilled))
    s.delete(spilled)
    assert not s.exists(spilled) and _parked(s) == []
    s.destroy()


def test_map_cache_reuses_a_mapping_and_forgets_unlinked_files(tmp_path):
    cache = MapCache(entries=2)
    paths = []
    for i in range(3):
        p = str(tmp_path / f"f{i}")
        with open(p, "wb") as f:
            f.truncate(MiB)
        paths.append(p)
    with cache.view(paths[0]) as v:
        v[:3] = b"abc"
        addr = np.frombuffer(v, np.uint8).ctypes.data
    with cache.view(paths[0]) as v:
        assert bytes(v[:3]) == b"abc" and np.frombuffer(v, np.uint8).ctypes.data == addr
    cache.view(paths[1]).release()
    cache.view(paths[2]).release()
    assert len(cache) == 2  # the oldest went
    os.unlink(paths[1])
    cache.prune()
    assert len(cache) == 1
    cache.clear()


def test_readers_reuse_their_mapping_of_a_recycled_file_and_see_its_new_object(store):
    from mpiray._store import shm

    store.write("a", dumps(np.full(10 * MiB, 1, np.uint8)))
    a = store.read("a", None)
    mapped = len(shm.MAPS)
    part = a[10:20]  # a view derived from the read keeps the pin too
    del a
    store.delete("a")
    assert _parked(store) == []  # still pinned by `part`
    assert (part == 1).all()
    del part
    store.write("b", dumps(np.full(10 * MiB, 1, np.uint8)))
    store.delete("b")
    assert len(_parked(store)) == 1  # pins gone with the last view
    store.write("c", dumps(np.full(10 * MiB, 7, np.uint8)))  # the same file again
    c = store.read("c", None)
    assert (c == 7).all() and not c.flags.writeable
    st = os.stat(store.path("c"))
    first = shm.MAPS._maps[(st.st_dev, st.st_ino)][1]
    del c
    store.delete("c")
    store.write("d", dumps(np.full(10 * MiB, 8, np.uint8)))  # recycled once more
    assert os.stat(store.path("d")).st_ino == st.st_ino
    d = store.read("d", None)
    assert (d == 8).all()
    assert shm.MAPS._maps[(st.st_dev, st.st_ino)][1] is first  # no new mapping
    assert len(shm.MAPS) <= max(mapped, 1) + 1


def test_the_pin_of_a_read_through_the_cache_lives_with_the_view(store):
    from mpiray._store.shm import READ_CACHE_MIN

    store.write("a", dumps(np.ones(READ_CACHE_MIN, np.uint8)))
    view = map_file(store.path("a"))
    with open(store.path("a"), "rb") as f:
        with pytest.raises(BlockingIOError):
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        part = view[100:200]
        view.release()
        del view
        with pytest.raises(BlockingIOError):  # a view made from it still pins
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        part.release()
        del part
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
