"""Rank 0's delivery arena: where other hosts' objects land for the driver, one copy.

A pull (``transfer.py``) moves bytes twice: the owner copies the object into
its staging window, the requester ``Get``s it into a new file of its store.
The two copies are needed because the object lives in a file that worker
processes map, and MPI can only read or write memory it allocated itself.
The driver is different: it runs inside rank 0, an MPI process, so its
objects can land straight in MPI memory.  Rank 0 allocates one window for
that at start-up; the driver's ``get`` of another host's object asks the
owner to *deliver* it::

    driver get(oid) ──> Arena.alloc(nbytes) ──> DELIVER(oid, 0, offset, nbytes)
                                                owner: Put(object file -> window of rank 0
                                                       at offset), in chunks; Flush
    value = loads(region) <── DELIVERED(oid, nbytes)   (-1: not here, lost)

The value's buffers (numpy arrays) are read-only views of the region; the
region goes back to the arena when the last of them is gone (a finalizer on
the region's exporter), never while a view lives.  Nothing here touches MPI:
the arena hands out offsets of a buffer it is given.
"""

from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import threading
import weakref
from collections import deque
from typing import Any, Callable

ALIGN = mmap.PAGESIZE  # regions start and end on page boundaries (of the address space)


def shm_room(path: str = "/dev/shm", keep: int = 64 << 20) -> Callable[[int], bool]:
    """``can_grow`` for an arena whose pages live in the tmpfs at ``path``: room for
    ``extra`` more bytes there, keeping ``keep`` free."""
    import shutil

    def can_grow(extra: int) -> bool:
        try:
            return shutil.disk_usage(path).free - extra >= keep
        except OSError:
            return True  # no such folder: MPI's memory is not there
    return can_grow


def wanted(config: Any, hosts: list[str]) -> bool:
    """Whether the ranks open the arena window (rank 0's delivery arena, the raylets'
    region copies: ``regions.py``); every rank must agree (the window is collective):
    only when objects may be read from another host."""
    if config.driver_arena_bytes == 0 and config.node_arena_bytes == 0:
        return False
    return not config.share_host_memory or any(h != hosts[0] for h in hosts[1:])


class Arena:
    """First-fit allocator of page-aligned byte ranges in ``memory`` (a writable buffer).

    Regions whose last view died are given back lazily: the finalizer only queues
    the offset (it may run inside the cycle collector, on a thread that already
    holds the lock), and every entry point drains the queue under the lock.
    """

    def __init__(self, memory: Any, can_grow: Callable[[int], bool] | None = None):
        self.memory = memoryview(memory).cast("B") if memory is not None else memoryview(b"")
        self.size = self.memory.nbytes
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.memory)) if self.size else 0
        lead = min(-self.base % ALIGN, self.size)  # the first page boundary inside the memory
        usable = (self.size - lead) // ALIGN * ALIGN
        self._free: list[tuple[int, int]] = [(lead, usable)] if usable else []  # (offset, length)
        self._taken: dict[int, int] = {}  # offset -> length of every region handed out
        self._owned: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # offset -> exporter
        self._moved: dict[int, tuple[int, int]] = {}  # offset -> (address, length) kept after close
        self._dead: deque[int] = deque()  # offsets whose exporter died, not yet given back
        self._lock = threading.Lock()
        # the arena's pages come into being when first written (tmpfs, under MPI): before
        # handing out bytes past the furthest ever handed out, ask ``can_grow(extra)``
        # whether the system has room for them (a Put into a full tmpfs is a SIGBUS)
        self.can_grow = can_grow
        self.touched = lead
        self.closed = False

    @property
    def written(self) -> int:
        """Bytes of the pages handed out at least once (written by some Put)."""
        return self.touched - min(-self.base % ALIGN, self.size)

    @property
    def used(self) -> int:
        with self._lock:
            self._drain_locked()
            return sum(self._taken.values())

    def live(self) -> int:
        """How many regions are handed out (being delivered, or viewed by a value)."""
        with self._lock:
            self._drain_locked()
            return len(self._taken)

    def alloc(self, nbytes: int, grow: bool = True) -> int | None:
        """The offset of a free region of at least ``nbytes``; None when none is free (with
        ``grow=False``: none among the pages written before)."""
        need = max(ALIGN, -(-nbytes // ALIGN) * ALIGN)
        with self._lock:
            self._drain_locked()
            if self.closed:
                return None
            for i, (off, length) in enumerate(self._free):
                if length >= need:
                    grow_by = off + need - self.touched
                    if grow_by > 0 and not grow:
                        break  # the free ranges are in order: later ones reach further
                    if grow_by > 0:
                        if self.can_grow is not None and not self.can_grow(grow_by):
                            return None  # the first fit needs new pages the system cannot give
                        self.touched += grow_by
                    if length == need:
                        del self._free[i]
                    else:
                        self._free[i] = (off + need, length - need)
                    self._taken[off] = need
                    return off
        return None

    def release(self, offset: int) -> None:
        """Give back the region at ``offset``, merging it with free neighbours."""
        with self._lock:
            self._drain_locked()
            self._release_locked(offset)

    def _drain_locked(self) -> None:
        while self._dead:
            self._release_locked(self._dead.popleft())

    def _release_locked(self, offset: int) -> None:
        length = self._taken.pop(offset, None)
        if length is None:
            return  # dropped at close (it was being delivered, viewed by nobody)
        moved = self._moved.pop(offset, None)
        if moved is not None:  # after close: its private copy goes back to the system
            _libc().munmap(ctypes.c_void_p(moved[0]), ctypes.c_size_t(moved[1]))
            return
        if self.closed:
            return
        i = bisect.bisect(self._free, (offset, 0))
        if i < len(self._free) and offset + length == self._free[i][0]:
            length += self._free.pop(i)[1]
        if i > 0 and self._free[i - 1][0] + self._free[i - 1][1] == offset:
            i -= 1
            offset, prev = self._free.pop(i)
            length += prev
        self._free.insert(i, (offset, length))

    def region(self, offset: int, nbytes: int) -> Any:
        """The exporter of ``nbytes`` at ``offset``: ``memoryview(r).cast("B")`` reads it.
        When it and every view made from it (numpy arrays of a value) are gone, the
        region is free again."""
        owner = (ctypes.c_char * max(nbytes, 1)).from_buffer(self.memory, offset)
        fin = weakref.finalize(owner, self._dead.append, offset)
        fin.atexit = False  # at interpreter exit nothing is given back: views may still be read
        self._owned[offset] = owner
        return owner

    def writable(self, offset: int, nbytes: int) -> memoryview:
        """The bytes a Put into ``offset`` lands in."""
        return self.memory[offset:offset + nbytes]

    def close(self, free_memory: Callable[[], None]) -> int:
        """Let the memory go (``free_memory()``, e.g. freeing the MPI window) while values
        still viewing regions keep them: their bytes are copied to private pages mapped at
        the same addresses.  Returns how many regions were kept that way.  Never raises
        after ``free_memory()`` ran: a region that cannot be kept is reported on stderr."""
        with self._lock:
            self._drain_locked()
            self.closed = True
            kept = [(off, self._taken[off]) for off in list(self._owned.keys()) if off in self._taken]
            for off in [o for o in self._taken if o not in dict(kept)]:
                del self._taken[off]  # being delivered, viewed by nobody: nothing to keep
            self._free = []
            saved = [(off, self.base + off, bytes(self.memory[off:off + n])) for off, n in kept]
        free_memory()
        libc = _libc()
        kept_n = lost = 0
        saved.reverse()
        while saved:
            off, addr, data = saved.pop()  # each copy goes once it is back in place
            n = len(data)
            got = libc.mmap(ctypes.c_void_p(addr), ctypes.c_size_t(n), _PROT_RW, _MAP_KEEP, -1, 0)
            if got != addr:
                if got != _MAP_FAILED:
                    libc.munmap(ctypes.c_void_p(got), ctypes.c_size_t(n))
                lost += 1
                continue
            ctypes.memmove(addr, data, n)
            del data
            with self._lock:
                if off in self._taken:
                    self._moved[off] = (addr, n)
                    kept_n += 1
                else:  # its last view died meanwhile: nothing to keep
                    libc.munmap(ctypes.c_void_p(addr), ctypes.c_size_t(n))
        if lost:
            os.write(2, (f"mpiray: {lost} value(s) the driver read from another host could not be "
                         "kept after shutdown (their memory was taken); do not use them.\n").encode())
        with self._lock:
            self._drain_locked()  # values that died meanwhile: their copies go at once
        return kept_n


_PROT_RW = 0x1 | 0x2  # PROT_READ | PROT_WRITE
_MAP_KEEP = 0x02 | 0x20 | 0x100000  # MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE
_MAP_FAILED = ctypes.c_size_t(-1).value


def _libc() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_size_t
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                          ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc
