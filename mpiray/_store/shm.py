"""The node-local object store: one shared-memory file per object.

Layout of an object file (all integers little-endian)::

    0   magic  b"MRAY"   4 bytes
    4   nbufs            u32
    8   pickle length    u64
    16  (offset u64, length u64) * nbufs
    ... pickle stream, then each buffer at a 64-byte aligned offset

Writers (workers, the driver) write a file once and never change it; readers
map it read-only, so numpy arrays that come back are zero-copy, read-only
views of shared memory (as in Ray).  A file may be longer than its object (a
recycled file, see ``pool.py``): the header says where the object ends
(``object_length``).  Every mapping a reader takes holds ``LOCK_SH`` on the
file for as long as it lives; a file freed while mapped is unlinked, not
recycled, so whoever still maps it keeps its bytes.  Every process of the node
finds an object by id through ``Store.path``; other nodes pull the bytes (see
``pin_raw``).
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import struct
import tempfile
import threading
import weakref
from typing import Any

from .._liveness import process_alive
from .._objref import RefTracker
from .._serialization import Blob, loads
from .pool import POOL_MIN, FreePool, MapCache, _unlink

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


def object_length(view: memoryview) -> int:
    """Bytes of the object at the start of ``view`` (its file may be longer)."""
    magic, nbufs, plen = _HEAD.unpack_from(view, 0)
    if magic != MAGIC:
        raise ValueError("not an mpiray object (bad magic)")
    if not nbufs:
        return _HEAD.size + plen
    off, n = _ENTRY.unpack_from(view, _HEAD.size + (nbufs - 1) * _ENTRY.size)
    return off + n


class Store:
    """The object files of one rank, under ``<root>/mpiray-<session>/r<rank>``.

    Files beyond ``capacity`` bytes are spilled, oldest first, to the same layout
    under ``<spill_root>/mpiray-<session>/r<rank>`` on node-local disk; every
    lookup (``locate``/``map``) falls back to the spill folder, so a spilled
    object comes back transparently.  Readers that map a file keep a valid view
    when it is spilled or deleted.

    With a ``capacity`` (the store of the process that frees objects), big
    files nobody maps are parked in the free pool when deleted (``pool.py``);
    ``used`` counts objects, ``pool.bytes()`` the parked files, and both
    together stay under ``capacity``: parked files are trimmed before objects
    are spilled.
    """

    def __init__(self, session: str, rank: int, root: str | None = None,
                 spill_root: str | None = None, capacity: int | None = None):
        self.root = os.path.join(root or default_root(), f"mpiray-{session}")
        self.spill = os.path.join(spill_root or tempfile.gettempdir(), f"mpiray-spill-{session}")
        self.rank = rank
        self.dir = self.dir_of(rank)
        self.capacity = capacity
        self.used = 0
        self.sizes: dict[str, int] = {}  # objects in shared memory, oldest first
        self.spilled: dict[str, int] = {}
        self.spilled_bytes_total = 0
        self.pool = FreePool(self.dir)
        self.maps = MAPS  # this process's mappings (shared by its stores, reads and writes)
        self.writes_big = False  # wrote an object of READ_CACHE_MIN or more: keeps freed ones warm
        self._lock = threading.Lock()

    def dir_of(self, rank: int) -> str:
        return os.path.join(self.root, f"r{rank}")

    def create(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        with open(os.path.join(self.root, f".pid-r{self.rank}"), "w") as f:
            f.write(str(os.getpid()))

    def path(self, object_id: str, rank: int | None = None) -> str:
        return os.path.join(self.dir if rank is None else self.dir_of(rank), object_id)

    def spill_path(self, object_id: str, rank: int | None = None) -> str:
        return os.path.join(self.spill, f"r{self.rank if rank is None else rank}", object_id)

    def locate(self, object_id: str, rank: int | None = None) -> str | None:
        """Where the object's file is now (shared memory or spilled), or None if gone."""
        for path in (self.path(object_id, rank), self.spill_path(object_id, rank)):
            if os.path.exists(path):
                return path
        return None

    # -- writing -----------------------------------------------------------
    def write(self, object_id: str, blob: Blob) -> int:
        """Write ``blob`` as object ``object_id``; the bytes its file holds in memory."""
        header, pieces, total = layout(blob)
        path = self.path(object_id)
        if total >= POOL_MIN:
            self.writes_big = self.writes_big or total >= READ_CACHE_MIN
            cap = self.pool.claim(total, path + ".tmp")
            if cap is not None:
                try:
                    with self.maps.view(path + ".tmp") as view:
                        view[:len(header)] = header
                        for off, piece in pieces:
                            piece = memoryview(piece).cast("B")
                            view[off:off + piece.nbytes] = piece
                except OSError as exc:
                    _unlink(path + ".tmp")
                    raise _full(object_id, total, self.root, exc) from None
                os.rename(path + ".tmp", path)
                self.note(object_id, cap)
                return cap
        fd = os.open(path + ".tmp", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, total)
            os.pwrite(fd, header, 0)
            for off, piece in pieces:
                view = memoryview(piece).cast("B")
                while view.nbytes:
                    n = os.pwrite(fd, view, off)
                    view, off = view[n:], off + n
        except OSError as exc:
            os.close(fd)
            os.unlink(path + ".tmp")
            raise _full(object_id, total, self.root, exc) from None
        os.close(fd)
        os.rename(path + ".tmp", path)
        self.note(object_id, total)
        return total

    def open_dest(self, path: str, nbytes: int) -> tuple[memoryview, int]:
        """A writable mapping of at least ``nbytes`` bytes backed by a new file at ``path``
        (a recycled one when the pool has one that fits), and the file's size."""
        self.writes_big = self.writes_big or nbytes >= READ_CACHE_MIN
        cap = self.pool.claim(nbytes, path) if nbytes >= POOL_MIN else None
        if cap is not None:
            return self.maps.view(path), cap
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, nbytes)
            if nbytes < POOL_MIN:
                return (memoryview(mmap.mmap(fd, nbytes)) if nbytes else memoryview(b"")), nbytes
        finally:
            os.close(fd)
        # cached, so the file is warm here if it comes back from the pool; not populated:
        # its first writer faults the fresh pages in anyway
        return self.maps.view(path, populate=False), nbytes

    def note(self, object_id: str, size: int) -> None:
        """Account for a file now in this rank's shared memory; spill if over capacity."""
        with self._lock:
            if object_id in self.sizes:
                return
            self.sizes[object_id] = size
            self.used += size
        if self.capacity is None:
            return
        # parked files are bounded at half the capacity: below the other half, no need to look
        parked = self.pool.bytes() if self.used > self.capacity - self.capacity // 2 else 0
        if parked and self.used + parked > self.capacity:
            self.pool.trim(self.used + parked - self.capacity)
            self.maps.prune()
        if self.used > self.capacity:
            self.spill_until(int(self.capacity * 0.8))

    def spill_until(self, limit: int) -> int:
        """Move the oldest objects to disk until at most ``limit`` bytes stay in memory."""
        moved = 0
        while True:
            with self._lock:
                if self.used <= limit or not self.sizes:
                    return moved
                oid = next(iter(self.sizes))
                size = self.sizes.pop(oid)
                self.used -= size
            src, dst = self.path(oid), self.spill_path(oid)
            try:
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                shutil.copyfile(src, dst + ".tmp")
                os.rename(dst + ".tmp", dst)
                os.unlink(src)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) and not os.path.exists(src):
                    continue  # freed meanwhile
                with self._lock:  # keep it in memory; report what could not be done
                    self.sizes[oid] = size
                    self.used += size
                raise _full(oid, size, self.spill, exc) from None
            with self._lock:
                self.spilled[oid] = size
                self.spilled_bytes_total += size
            moved += size

    # -- reading -----------------------------------------------------------
    def map(self, object_id: str, rank: int | None = None) -> memoryview:
        path = self.locate(object_id, rank)
        if path is None:
            raise FileNotFoundError(self.path(object_id, rank))
        return map_file(path)

    def read(self, object_id: str, tracker: RefTracker | None, rank: int | None = None) -> Any:
        data, bufs = parse(self.map(object_id, rank))
        return loads(data, bufs, tracker)

    def pin_raw(self, object_id: str) -> memoryview:
        """The object's bytes for a push (its file may be longer), pinned like every read
        (``map_file``) until the view is released."""
        view = self.map(object_id)
        return view[:object_length(view)] if view.nbytes else view

    def exists(self, object_id: str, rank: int | None = None) -> bool:
        return self.locate(object_id, rank) is not None

    # -- freeing -----------------------------------------------------------
    def delete(self, object_id: str) -> None:
        """Free an object: park its file for reuse if big and unmapped, else unlink it."""
        with self._lock:
            size = self.sizes.pop(object_id, 0)
            self.used -= size
            self.spilled.pop(object_id, None)
        path = self.path(object_id)
        if self.capacity and size >= READ_CACHE_MIN and self.writes_big:
            try:  # this process writes big objects too: have the file warm for its next one
                self.maps.view(path).release()
            except OSError:
                pass
        if not (self.capacity and size >= POOL_MIN and self.pool.park(path, self.capacity // 2)):
            _unlink(path)
        _unlink(self.spill_path(object_id))
        self.maps.prune()

    def destroy(self) -> None:
        self.maps.clear()  # the session is over: let go of every file this process mapped
        shutil.rmtree(self.dir, ignore_errors=True)
        try:
            os.unlink(os.path.join(self.root, f".pid-r{self.rank}"))
        except FileNotFoundError:
            pass
        shutil.rmtree(os.path.join(self.spill, f"r{self.rank}"), ignore_errors=True)
        for d in (self.root, self.spill):
            try:
                os.rmdir(d)
            except OSError:
                pass


def sweep_stale(parent: str, min_age: float = 60.0) -> int:
    """Remove this user's ``mpiray-*`` store folders under ``parent`` whose processes are all
    gone (a job killed with SIGKILL cannot clean up after itself).  Returns how many."""
    import time

    removed, now, uid = 0, time.time(), os.getuid()
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith("mpiray-") or entry.name.startswith("mpiray-spill-"):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_uid != uid or now - st.st_mtime < min_age or not entry.is_dir(follow_symlinks=False):
                continue
            pids = []
            for name in os.listdir(entry.path):
                if name.startswith(".pid-r"):
                    with open(os.path.join(entry.path, name)) as f:
                        pids.append(int(f.read().strip() or 0))
        except (OSError, ValueError):
            continue
        if any(process_alive(pid) for pid in pids):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed += 1
    return removed


MAPS = MapCache()  # this process's mappings of big object files, read or written
READ_CACHE_MIN = 8 << 20  # smaller files map faster than a cache lookup pays back


def map_file(path: str) -> memoryview:
    """A read-only view of a whole file (falls back to its spilled copy), pinned: the
    file holds ``LOCK_SH`` as long as the view (or any view made from it) lives, so
    it is not recycled under the view.

    Big files in shared memory are read through this process's cached mapping of
    the same file (recycled files come back): no page-table fill on each read.
    The pin is then a descriptor of its own, closed when the view's holder array
    is collected; the cached mapping itself holds no lock.
    """
    spilled = False
    try:
        fd = _open_pinned(path)
    except FileNotFoundError:
        alt = spilled_twin(path)
        if alt is None:
            raise
        fd, spilled = _open_pinned(alt), True
    try:
        size = os.fstat(fd).st_size
        if size >= READ_CACHE_MIN and not spilled:
            import numpy as np

            holder = np.frombuffer(MAPS.view_of(fd), dtype=np.uint8)
            holder.flags.writeable = False
            weakref.finalize(holder, os.close, fd)
            return memoryview(holder)
        mm = mmap.mmap(fd, size, prot=mmap.PROT_READ) if size else b""
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)  # the mapping keeps its own duplicate, and with it the lock
    return memoryview(mm)


def _open_pinned(path: str) -> int:
    """A descriptor of ``path`` holding ``LOCK_SH``.  A file being recycled is moved away
    under its exclusive lock, so after locking check the path still names this file."""
    for _ in range(8):
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            st, now = os.fstat(fd), os.stat(path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    raise FileNotFoundError(errno.ENOENT, "object file kept moving while being opened", path)


_SPILL_ROOTS: dict[str, str] = {}  # shared-memory root -> spill root, for map_file's fallback


def register_spill_root(store: Store) -> None:
    _SPILL_ROOTS[store.root] = store.spill


def spilled_twin(path: str) -> str | None:
    for shm_root, spill_root in _SPILL_ROOTS.items():
        if path.startswith(shm_root + os.sep):
            alt = spill_root + path[len(shm_root):]
            return alt if os.path.exists(alt) else None
    return None


def _full(object_id: str, size: int, where: str, exc: OSError) -> Exception:
    from ..exceptions import ObjectStoreFullError

    return ObjectStoreFullError(
        f"cannot store object {object_id} ({size / 2**20:.1f} MiB) under {where}: {exc.strerror or exc}. "
        "Free objects (drop ObjectRefs), raise object_store_memory, or point MPIRAY_SPILL_DIR "
        "at a disk with room.")


def check_shared_memory(root: str, capacity: int) -> int:
    """The capacity to use given the free space of the shared-memory folder; errors if tiny."""
    free = shutil.disk_usage(root).free
    if free < 32 << 20:
        from ..exceptions import ObjectStoreFullError

        raise ObjectStoreFullError(
            f"{root} has only {free / 2**20:.0f} MiB free; mpiray keeps objects there and needs at "
            "least 32 MiB. Give the job a larger /dev/shm (e.g. `docker run --shm-size=8g`, or ask "
            "your admins), or set MPIRAY_STORE_ROOT to a tmpfs with room.")
    return min(capacity, int(free * 0.9))
