"""The node-local object store: one shared-memory file per object.

Layout of an object file (all integers little-endian)::

    0   magic  b"MRAY"   4 bytes
    4   nbufs            u32
    8   pickle length    u64
    16  (offset u64, length u64) * nbufs
    ... pickle stream, then each buffer at a 64-byte aligned offset

Writers (workers, the driver) write a file once and never change it; readers
map it read-only, so numpy arrays that come back are zero-copy, read-only
views of shared memory (as in Ray).  A file deleted while mapped stays valid
for whoever still maps it.  Every process of the node finds an object by id
through ``Store.path``; other nodes pull the bytes (see ``read_raw``).
"""

from __future__ import annotations

import mmap
import os
import shutil
import struct
import tempfile
from typing import Any

from .._objref import RefTracker
from .._serialization import Blob, loads

MAGIC = b"MRAY"
_HEAD = struct.Struct("<4sIQ")
_ENTRY = struct.Struct("<QQ")
ALIGN = 64


def default_root() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def layout(blob: Blob) -> tuple[bytes, list[tuple[int, Any]], int]:
    """Header bytes, (offset, buffer) pieces and total size of ``blob`` on disk."""
    bufs = [memoryview(b).cast("B") for b in blob.buffers]
    head = _HEAD.size + _ENTRY.size * len(bufs)
    pos = head + len(blob.data)
    entries, pieces = [], [(head, blob.data)]
    for b in bufs:
        pos = _align(pos)
        entries.append(_ENTRY.pack(pos, b.nbytes))
        pieces.append((pos, b))
        pos += b.nbytes
    header = _HEAD.pack(MAGIC, len(bufs), len(blob.data)) + b"".join(entries)
    return header, pieces, pos


def parse(view: memoryview) -> tuple[memoryview, list[memoryview]]:
    magic, nbufs, plen = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError("not an mpiray object (bad magic)")
    head = _HEAD.size + _ENTRY.size * nbufs
    bufs = []
    for i in range(nbufs):
        off, n = _ENTRY.unpack_from(view, _HEAD.size + i * _ENTRY.size)
        bufs.append(view[off:off + n])
    return view[head:head + plen], bufs


class Store:
    """The object files of one rank, under ``<root>/mpiray-<session>/r<rank>``."""

    def __init__(self, session: str, rank: int, root: str | None = None):
        self.root = os.path.join(root or default_root(), f"mpiray-{session}")
        self.rank = rank
        self.dir = self.dir_of(rank)
        self.used = 0
        self.sizes: dict[str, int] = {}

    def dir_of(self, rank: int) -> str:
        return os.path.join(self.root, f"r{rank}")

    def create(self) -> None:
        os.makedirs(self.dir, exist_ok=True)

    def path(self, object_id: str, rank: int | None = None) -> str:
        return os.path.join(self.dir if rank is None else self.dir_of(rank), object_id)

    # -- writing -----------------------------------------------------------
    def write(self, object_id: str, blob: Blob) -> int:
        header, pieces, total = layout(blob)
        path = self.path(object_id)
        fd = os.open(path + ".tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, total)
            os.pwrite(fd, header, 0)
            for off, piece in pieces:
                view = memoryview(piece).cast("B")
                while view.nbytes:
                    n = os.pwrite(fd, view, off)
                    view, off = view[n:], off + n
        finally:
            os.close(fd)
        os.rename(path + ".tmp", path)
        self.note(object_id, total)
        return total

    def write_raw(self, object_id: str, data: Any) -> int:
        """Store bytes pulled from another node (already in the file format)."""
        path = self.path(object_id)
        view = memoryview(data).cast("B")
        with open(path + ".tmp", "wb") as f:
            f.write(view)
        os.rename(path + ".tmp", path)
        self.note(object_id, view.nbytes)
        return view.nbytes

    def note(self, object_id: str, size: int) -> None:
        if object_id not in self.sizes:
            self.sizes[object_id] = size
            self.used += size

    # -- reading -----------------------------------------------------------
    def map(self, object_id: str, rank: int | None = None) -> memoryview:
        with open(self.path(object_id, rank), "rb") as f:
            size = os.fstat(f.fileno()).st_size
            mm = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else b""
        return memoryview(mm)

    def read(self, object_id: str, tracker: RefTracker | None, rank: int | None = None) -> Any:
        data, bufs = parse(self.map(object_id, rank))
        return loads(data, bufs, tracker)

    def read_raw(self, object_id: str) -> memoryview:
        return self.map(object_id)

    def exists(self, object_id: str, rank: int | None = None) -> bool:
        return os.path.exists(self.path(object_id, rank))

    # -- freeing -----------------------------------------------------------
    def delete(self, object_id: str) -> None:
        self.used -= self.sizes.pop(object_id, 0)
        try:
            os.unlink(self.path(object_id))
        except FileNotFoundError:
            pass

    def destroy(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.rmdir(self.root)
        except OSError:
            pass
