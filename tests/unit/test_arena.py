"""Rank 0's delivery arena without MPI: allocation, regions freed by their last view, close."""

import ctypes
import gc
import pickle
import types

import numpy as np
import pytest

from mpiray._store.arena import ALIGN, Arena, _libc, wanted


def _value_in(arena, value):
    """Write ``value`` as pickle + out-of-band buffer into the arena; read it back zero-copy."""
    bufs = []
    data = pickle.dumps(value, protocol=5, buffer_callback=bufs.append)
    raw = bufs[0].raw()
    off = arena.alloc(raw.nbytes)
    arena.writable(off, raw.nbytes)[:] = raw
    region = arena.region(off, raw.nbytes)
    return pickle.loads(data, buffers=[memoryview(region).cast("B").toreadonly()])


def test_first_fit_alignment_and_full():
    a = Arena(bytearray(16 * ALIGN))
    offs = [a.alloc(1), a.alloc(ALIGN + 1), a.alloc(ALIGN)]
    assert offs == [0, ALIGN, 3 * ALIGN]
    assert a.used == 4 * ALIGN and a.live() == 3
    assert a.alloc(13 * ALIGN) is None  # 12 pages left
    assert a.alloc(12 * ALIGN) == 4 * ALIGN


def test_release_merges_neighbours():
    a = Arena(bytearray(8 * ALIGN))
    offs = [a.alloc(2 * ALIGN) for _ in range(4)]
    assert a.alloc(1) is None
    a.release(offs[1])
    a.release(offs[3])
    assert a.alloc(4 * ALIGN) is None  # two holes of two pages, not one of four
    a.release(offs[2])  # joins both holes
    assert a.alloc(6 * ALIGN) == 2 * ALIGN
    a.release(2 * ALIGN)
    a.release(offs[0])
    assert a.live() == 0 and a.alloc(8 * ALIGN) == 0


def test_region_lives_as_long_as_any_view():
    a = Arena(bytearray(1 << 20))
    x = np.arange(10_000, dtype=np.int64)
    v = _value_in(a, x)
    gc.collect()
    assert a.live() == 1  # only the numpy array refers to the region now
    assert (v == x).all() and not v.flags.writeable
    w = v[5:10]
    del v
    gc.collect()
    assert a.live() == 1 and int(w[0]) == 5
    del w
    gc.collect()
    assert a.live() == 0


def test_close_keeps_viewed_regions_at_their_addresses():
    libc = _libc()
    n = 1 << 22
    addr = libc.mmap(None, n, 3, 0x02 | 0x20, -1, 0)  # stands for the MPI window
    a = Arena((ctypes.c_char * n).from_address(addr))
    kept = _value_in(a, np.arange(50_000, dtype=np.float64))
    _value_in(a, np.ones(1000))  # dropped at once: nothing to keep
    gc.collect()
    assert a.live() == 1
    freed = []

    def free_window():
        freed.append(True)
        assert libc.munmap(ctypes.c_void_p(addr), n) == 0

    assert a.close(free_window) == 1 and freed
    assert kept[49_999] == 49_999.0 and kept.sum() == np.arange(50_000.0).sum()
    del kept
    gc.collect()
    assert a.live() == 0  # its private copy went back to the system


def test_who_opens_an_arena():
    cfg = types.SimpleNamespace(driver_arena_bytes=None, share_host_memory=True)
    assert not wanted(cfg, ["a", "a", "a"])  # one host: the driver maps the objects
    assert wanted(cfg, ["a", "a", "b"])
    assert wanted(types.SimpleNamespace(driver_arena_bytes=None, share_host_memory=False), ["a", "a"])
    assert not wanted(types.SimpleNamespace(driver_arena_bytes=0, share_host_memory=False), ["a", "b"])


@pytest.mark.parametrize("size", [0])
def test_empty_arena_has_no_room(size):
    a = Arena(bytearray(size))
    assert a.alloc(1) is None and a.live() == 0


def test_new_pages_only_when_the_system_has_room():
    asked = []
    room = {"left": 3 * ALIGN}

    def can_grow(extra):
        asked.append(extra)
        return extra <= room["left"]

    a = Arena(bytearray(16 * ALIGN), can_grow)
    first = a.alloc(2 * ALIGN)
    assert first == 0 and asked == [2 * ALIGN]
    room["left"] = ALIGN
    assert a.alloc(2 * ALIGN) is None  # would reach past the pages written so far
    a.release(first)
    assert a.alloc(ALIGN) == 0 and asked == [2 * ALIGN, 2 * ALIGN]  # old pages: no question
    assert a.touched == 2 * ALIGN
