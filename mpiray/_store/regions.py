"""A raylet's copies of other hosts' objects, one copy each, in its arena window.

A pull through the staging window moves the bytes twice (``transfer.py``).
When a raylet has an arena window (when some rank is on another host, or
``MPIRAY_SHARE_HOST_MEMORY=0``) and its workers were forked after the window
existed (``_node/zygote.py``), so that they map it too, the owner instead Puts
the object file straight into a region of that window, as for the driver::

    raylet: RegionCache.reserve(oid, nbytes) ──> DELIVER(oid, me, offset, room)
            owner: Put(file -> window of me at offset); DELIVERED(oid, nbytes)
    raylet: task deps[oid] = ("region", offset, nbytes)
    worker: read(offset, nbytes) -> zero-copy read-only view, pinned

Lifetime: the copy is a cache entry, not a store object (rank 0 does not count
it as a copy, so it is never asked to serve or free it).  An entry is *in
use* while a task it was handed to is not done (``in_use(task_id)``), and
*pinned* while a worker holds a view of it: each read takes a shared
open-file-description lock (``F_OFD_SETLK``) on the region's byte range of a
pin file, held by a descriptor of the read's own and closed by a finalizer
when the last view is gone (a worker that dies drops its locks with it).
Entries neither in use nor pinned are evicted, least recently used first,
when a new one needs room.  Nothing here touches MPI.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import weakref
from collections import OrderedDict
from typing import Any, Callable

from .arena import Arena

# struct flock: l_type, l_whence, l_start, l_len, l_pid (+ padding, 32 bytes on 64-bit Linux)
_FLOCK = struct.Struct("@hhqqi4x")


class Entry:
    __slots__ = ("offset", "nbytes", "room", "ready", "users")

    def __init__(self, offset: int, room: int):
        self.offset = offset
        self.room = room  # bytes reserved (the owner's Put may not exceed them)
        self.nbytes = 0
        self.ready = False  # the bytes are in
        self.users: set[str] = set()  # ids of tasks it was handed to


class RegionCache:
    """The raylet's side: which objects sit where in its arena, and room for new ones."""

    def __init__(self, memory: Any, pin_path: str, can_grow: Callable[[int], bool] | None = None):
        self.arena = Arena(memory, can_grow)
        # one page kept for the zygote's proof that it shares the memory (zygote.py), so a
        # new zygote can be checked while copies are in use
        probe = self.arena.alloc(8)
        self.probe = self.arena.writable(probe, 8) if probe is not None else None
        self.pin_path = pin_path
        self.pin_fd = os.open(pin_path, os.O_RDWR | os.O_CREAT, 0o600)
        self.entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first

    @property
    def address(self) -> int:
        return self.arena.base

    @property
    def size(self) -> int:
        return self.arena.size

    def lookup(self, oid: str) -> Entry | None:
        """The object's filled entry, if here (now the most recently used)."""
        e = self.entries.get(oid)
        if e is None or not e.ready:
            return None
        self.entries.move_to_end(oid)
        return e

    def reserve(self, oid: str, nbytes: int, in_use: Callable[[str], bool]) -> int | None:
        """Room for ``nbytes`` of ``oid``; its offset, or None when there is none.  The
        entry is filled by ``filled`` or dropped by ``drop``.

        Pages written before come first, evicting idle entries to make room among them:
        a first write into fresh pages runs at a fraction of memory speed (the system
        zeroes and maps each one), and copies are seldom read twice.  Only then does
        the arena grow into new pages."""
        offset = self.arena.alloc(nbytes, grow=False)
        if offset is None and nbytes <= self.arena.written:
            for old in [k for k, e in self.entries.items() if e.ready]:
                if self._evict(old, in_use):
                    offset = self.arena.alloc(nbytes, grow=False)
                    if offset is not None:
                        break
        if offset is None:
            offset = self.arena.alloc(nbytes)
        if offset is None:
            return None
        self.entries[oid] = Entry(offset, nbytes)
        return offset

    def filled(self, oid: str, nbytes: int) -> Entry | None:
        e = self.entries.get(oid)
        if e is not None:
            e.nbytes, e.ready = nbytes, True
        return e

    def drop(self, oid: str) -> None:
        """A reservation whose delivery failed: give the room back."""
        e = self.entries.pop(oid, None)
        if e is not None:
            self.arena.release(e.offset)

    def use(self, oid: str, task_id: str) -> tuple:
        """Hand the entry to a task: the ObjInfo its worker reads, in use until it is done."""
        e = self.entries[oid]
        e.users.add(task_id)
        return ("region", e.offset, e.nbytes)

    def _evict(self, oid: str, in_use: Callable[[str], bool]) -> bool:
        e = self.entries[oid]
        e.users = {t for t in e.users if in_use(t)}
        if e.users or self.pinned(e.offset, e.room):
            return False
        del self.entries[oid]
        self.arena.release(e.offset)
        return True

    def pinned(self, offset: int, nbytes: int) -> bool:
        """Whether some worker holds a view of bytes in ``[offset, offset + nbytes)``."""
        probe = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, max(nbytes, 1), 0)
        got = fcntl.fcntl(self.pin_fd, fcntl.F_OFD_GETLK, probe)
        return _FLOCK.unpack(got)[0] != fcntl.F_UNLCK

    def close(self) -> None:
        self.entries.clear()
        os.close(self.pin_fd)
        try:
            os.unlink(self.pin_path)
        except FileNotFoundError:
            pass


# -- the worker's side ------------------------------------------------------------
_attached: dict[str, Any] = {}


def attach(address: int, size: int, pin_path: str) -> None:
    """In a worker forked from the raylet's zygote: the raylet's arena is mapped at
    ``address`` (inherited), ``size`` bytes."""
    _attached.update(address=address, size=size, pin_path=pin_path)


def read(offset: int, nbytes: int) -> memoryview:
    """A read-only view of ``nbytes`` at ``offset`` of the attached arena, pinned (the
    raylet does not reuse the bytes) for as long as it or any view made from it lives."""
    if not _attached:
        raise RuntimeError("this process has no arena mapped (not forked from a raylet's zygote)")
    if offset < 0 or offset + nbytes > _attached["size"]:
        raise ValueError(f"region {offset}+{nbytes} is outside the arena")
    fd = os.open(_attached["pin_path"], os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, _FLOCK.pack(fcntl.F_RDLCK, os.SEEK_SET, offset,
                                                        max(nbytes, 1), 0))
        import numpy as np

        raw = (ctypes.c_char * max(nbytes, 1)).from_address(_attached["address"] + offset)
        holder = np.frombuffer(raw, dtype=np.uint8, count=nbytes)
        holder.flags.writeable = False
        weakref.finalize(holder, os.close, fd)
    except BaseException:
        os.close(fd)
        raise
    return memoryview(holder)
