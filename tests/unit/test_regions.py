"""A raylet's region copies (``_store/regions.py``): room, eviction, and pins held by readers.
No MPI: the arena is a plain buffer, the readers are views in this process (each read holds
its own open-file-description lock, exactly as a worker's would)."""

import ctypes
import gc
import os

import numpy as np
import pytest

from mpiray._store import regions
from mpiray._store.arena import ALIGN
from mpiray._store.regions import RegionCache

PAGES = 16


@pytest.fixture
def cache(tmp_path):
    mem = (ctypes.c_char * (PAGES * ALIGN + ALIGN))()  # room for 16 aligned pages
    c = RegionCache(mem, str(tmp_path / "pins"))
    regions.attach(ctypes.addressof(mem), len(mem), c.pin_path)
    yield c, mem
    c.close()
    regions._attached.clear()


def fill(c, mem, oid, npages, value, in_use=lambda t: False):
    off = c.reserve(oid, npages * ALIGN, in_use)
    assert off is not None
    ctypes.memset(ctypes.addressof(mem) + off, value, npages * ALIGN)
    c.filled(oid, npages * ALIGN)
    return off


def fill_all(c, mem, npages):
    """Copies of ``npages`` each until the arena is full (each held by a running task while
    the next is made, so none is evicted); returns their ids."""
    ids = []
    while c.reserve("probe", npages * ALIGN, lambda t: True) is not None:
        c.drop("probe")
        oid = f"o{len(ids)}"
        fill(c, mem, oid, npages, len(ids), in_use=lambda t: True)
        c.use(oid, f"t{len(ids)}")
        ids.append(oid)
    assert len(ids) >= 3
    return ids


def test_a_filled_copy_is_found_and_handed_to_tasks(cache):
    c, mem = cache
    assert c.reserve("a", 3 * ALIGN, lambda t: False) is not None
    assert c.lookup("a") is None  # not filled yet
    c.filled("a", 3 * ALIGN - 5)
    e = c.lookup("a")
    assert e is not None and e.nbytes == 3 * ALIGN - 5
    kind, off, n = c.use("a", "task-1")
    assert kind == "region" and off == e.offset and n == 3 * ALIGN - 5


def test_idle_copies_make_room_least_recently_used_first(cache):
    c, mem = cache
    fill_all(c, mem, 4)
    c.lookup("o0")  # o0 is now the most recently used: o1 goes first
    assert fill(c, mem, "new", 4, 99) is not None
    assert "o1" not in c.entries and "o0" in c.entries


def test_copies_in_use_by_unfinished_tasks_are_kept(cache):
    c, mem = cache
    ids = fill_all(c, mem, 4)
    running = {f"t{i}" for i in range(len(ids) - 1)}  # the last task is done
    assert c.reserve("new", 4 * ALIGN, running.__contains__) is not None
    assert set(c.entries) == set(ids[:-1]) | {"new"}  # the finished task's copy went
    assert c.reserve("more", 4 * ALIGN, running.__contains__) is None  # all in use: no room


def test_a_view_pins_its_region_until_it_is_gone(cache):
    c, mem = cache
    ids = fill_all(c, mem, 4)
    off = c.entries[ids[0]].offset
    value = np.frombuffer(regions.read(off, 4 * ALIGN), dtype=np.uint8)  # a worker's read
    assert c.pinned(off, 4 * ALIGN) and not c.pinned(off + 4 * ALIGN, ALIGN)
    for j in range(2 * len(ids)):  # churn, the tasks done: every other copy is evicted, not this
        fill(c, mem, f"n{j}", 4, 50 + j)
        assert ids[0] in c.entries and int(value.min()) == 0 == int(value.max())
    assert not (set(ids[1:]) & set(c.entries))
    del value
    gc.collect()
    assert not c.pinned(off, 4 * ALIGN)
    for j in range(len(ids)):
        fill(c, mem, f"m{j}", 4, 90 + j)
    assert ids[0] not in c.entries  # unpinned and idle: evicted like the rest


def test_written_pages_are_reused_before_new_ones(cache):
    c, mem = cache
    fill(c, mem, "a", 4, 1)
    touched = c.arena.touched
    off = fill(c, mem, "b", 4, 2)  # evicts a (idle) rather than writing fresh pages
    assert c.arena.touched == touched and "a" not in c.entries and off + 4 * ALIGN <= touched
    fill(c, mem, "c", 8, 3)  # more than was ever written: grows, keeping b
    assert "b" in c.entries and c.arena.touched > touched


def test_a_failed_delivery_gives_its_room_back(cache):
    c, mem = cache
    off = c.reserve("a", 8 * ALIGN, lambda t: False)
    c.drop("a")
    assert "a" not in c.entries and c.reserve("b", 8 * ALIGN, lambda t: False) == off


def test_reads_outside_the_arena_or_without_one_fail_clearly(cache):
    c, mem = cache
    with pytest.raises(ValueError, match="outside the arena"):
        regions.read(c.arena.size - 10, 100)
    regions._attached.clear()
    with pytest.raises(RuntimeError, match="no arena mapped"):
        regions.read(0, 10)


def test_a_page_is_kept_for_the_zygote_probe(cache):
    c, mem = cache
    assert c.probe is not None and c.probe.nbytes == 8
    ids = fill_all(c, mem, 1)  # every other page handed out: never the probe's
    offs = sorted(c.entries[i].offset for i in ids)
    probe_at = ctypes.addressof(ctypes.c_char.from_buffer(c.probe)) - ctypes.addressof(mem)
    assert all(not (o <= probe_at < o + ALIGN) for o in offs)


def test_close_removes_the_pin_file(tmp_path):
    c = RegionCache(bytearray(4 * ALIGN), str(tmp_path / "pins"))
    assert os.path.exists(c.pin_path)
    c.close()
    assert not os.path.exists(c.pin_path)
