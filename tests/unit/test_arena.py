"""Rank 0's delivery arena without MPI: allocation, regions freed by their last view, close."""

import ctypes
import gc
import mmap
import pickle
import types

import numpy as np
import pytest

from mpiray._store.arena import ALIGN, Arena, _libc, wanted


def _pages(n):
    return mmap.mmap(-1, n * ALIGN)  # page-aligned, like an MPI window's shared segment


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
    a = Arena(_pages(16))
    offs = [a.alloc(1), a.alloc(ALIGN + 1), a.alloc(ALIGN)]
    assert offs == [0, ALIGN, 3 * ALIGN]
    assert a.used == 4 * ALIGN and a.live() == 3
    assert a.alloc(13 * ALIGN) is None  # 12 pages left
    assert a.alloc(12 * ALIGN) == 4 * ALIGN


def test_release_merges_neighbours():
    a = Arena(_pages(8))
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
    def cfg(driver=None, node=None, share=True):
        return types.SimpleNamespace(driver_arena_bytes=driver, node_arena_bytes=node, share_host_memory=share)

    assert not wanted(cfg(), ["a", "a", "a"])  # one host: the driver and workers map the objects
    assert wanted(cfg(), ["a", "a", "b"])
    assert wanted(cfg(share=False), ["a", "a"])
    assert wanted(cfg(driver=0, share=False), ["a", "b"])  # the raylets still want theirs
    assert wanted(cfg(node=0, share=False), ["a", "b"])  # and the driver its own
    assert not wanted(cfg(driver=0, node=0, share=False), ["a", "b"])


def test_alloc_without_growing_stays_in_written_pages():
    a = Arena(bytearray(16 * ALIGN))
    first = a.alloc(4 * ALIGN)
    assert a.alloc(2 * ALIGN, grow=False) is None  # only new pages are free
    a.release(first)
    again = a.alloc(2 * ALIGN, grow=False)
    assert again is not None and again + 2 * ALIGN <= a.touched
    assert a.alloc(4 * ALIGN, grow=False) is None  # 2 pages of written room left
    assert a.alloc(4 * ALIGN) is not None  # growing is allowed by default


def test_regions_are_page_aligned_in_unaligned_memory():
    mem = bytearray(8 * ALIGN + 100)  # malloc'd: its start is not on a page boundary
    a = Arena(mem)
    offs = [a.alloc(10) for _ in range(8)]
    assert None not in offs[:7]  # the part before the first boundary is not used
    assert all((a.base + off) % ALIGN == 0 for off in offs if off is not None)


@pytest.mark.parametrize("size", [0, 100])
def test_arena_without_a_whole_page_has_no_room(size):
    a = Arena(bytearray(size))
    assert a.alloc(1) is None and a.live() == 0


def test_a_finalizer_inside_the_lock_does_not_deadlock():
    a = Arena(_pages(8))
    a.can_grow = lambda extra: gc.collect() >= 0  # the cycle collector runs inside alloc

    class Cycle:
        pass

    c = Cycle()
    c.me, c.region = c, a.region(a.alloc(10), 10)  # the exporter dies only in a collection
    del c
    assert a.alloc(ALIGN) is not None  # its finalizer ran under the lock: queued, not deadlocked
    assert a.live() == 1


def test_new_pages_only_when_the_system_has_room():
    asked = []
    room = {"left": 3 * ALIGN}

    def can_grow(extra):
        asked.append(extra)
        return extra <= room["left"]

    a = Arena(_pages(16), can_grow)
    first = a.alloc(2 * ALIGN)
    assert first == 0 and asked == [2 * ALIGN]
    room["left"] = ALIGN
    assert a.alloc(2 * ALIGN) is None  # would reach past the pages written so far
    a.release(first)
    assert a.alloc(ALIGN) == 0 and asked == [2 * ALIGN, 2 * ALIGN]  # old pages: no question
    assert a.touched == 2 * ALIGN


class _FakeTransport:
    rank = 3

    def __init__(self):
        self.sent, self.puts = [], []

    def send(self, dest, msg):
        self.sent.append((dest, msg))

    def flush(self):
        pass

    def put_to(self, rank, offset, src, alive=None):
        self.puts.append((rank, offset, bytes(src)))


class _FakeStore:
    def __init__(self, objects):
        self.objects = objects

    def pin_raw(self, oid):
        if oid not in self.objects:
            raise FileNotFoundError(oid)
        return memoryview(self.objects[oid])


def test_owner_side_of_a_delivery(monkeypatch):
    from mpiray._protocol import messages as m
    from mpiray._store import transfer

    monkeypatch.setattr(transfer, "PUT_CHUNK", 4)
    big = bytes(range(10))
    t = _FakeTransport()
    x = transfer.Transfers(t, _FakeStore({"a": big, "b": b"xyz"}), None, None)
    x.near = {0}
    x.on_deliver(0, "gone", 0, 8192, 100)
    x.on_deliver(0, "b", 0, 4096, 2)  # more than the room rank 0 set aside
    assert t.sent == [(0, (m.DELIVERED, "gone", -1)), (0, (m.DELIVERED, "b", -2))] and not t.puts
    x.on_deliver(0, "a", 0, 4096, 4096)
    while x.busy():
        x.pump_puts()
    # pieces of PUT_CHUNK; the last one takes a remainder shorter than two chunks whole
    assert t.puts == [(0, 4096, big[0:4]), (0, 4100, big[4:10])]
    assert t.sent[-1] == (0, (m.DELIVERED, "a", 10))  # only once every chunk is in place


def test_put_pieces_stay_big():
    from mpiray._store.transfer import PUT_CHUNK, PUT_CHUNK_WIRE, put_piece

    assert PUT_CHUNK_WIRE < PUT_CHUNK  # to another host, the owner's loop takes turns sooner
    assert put_piece(2 * PUT_CHUNK, near=False) == PUT_CHUNK_WIRE
    assert put_piece(2 * PUT_CHUNK_WIRE - 1, near=False) == 2 * PUT_CHUNK_WIRE - 1

    assert put_piece(100) == 100
    assert put_piece(2 * PUT_CHUNK - 1) == 2 * PUT_CHUNK - 1  # not a chunk and a small tail
    assert put_piece(2 * PUT_CHUNK) == PUT_CHUNK
    left, pieces = 5 * PUT_CHUNK + 7, []
    while left:
        pieces.append(put_piece(left))
        left -= pieces[-1]
    assert pieces == [PUT_CHUNK] * 4 + [PUT_CHUNK + 7]


def test_close_while_a_value_dies():
    libc = _libc()
    n = 1 << 22
    addr = libc.mmap(None, n, 3, 0x02 | 0x20, -1, 0)
    a = Arena((ctypes.c_char * n).from_address(addr))
    held = {"v": _value_in(a, np.arange(1000.0)), "w": _value_in(a, np.arange(2000.0))}
    gc.collect()

    def free_window():  # the value dies between the copy and the remap
        del held["v"]
        gc.collect()
        assert libc.munmap(ctypes.c_void_p(addr), n) == 0

    a.close(free_window)
    assert held["w"][1999] == 1999.0  # the other stays readable
    assert a.live() == 1
    del held["w"]
    gc.collect()
    assert a.live() == 0 and not a._moved  # both private copies gone
