"""Warm shared memory for big objects: recycled files and cached mappings.

The first write into fresh tmpfs pages runs at a fraction of memcpy speed (the
kernel allocates and zeroes every page), and even a file whose pages exist
costs a page-table fill on each new mapping.  So big object files are not
thrown away when freed but parked for the next object of similar size, and
every process keeps its last few mappings of them::

    delete(oid) ──> flock(EX|NB) ok? ──yes──> rename into .free/<capacity>.<tag>
                         │ no: a reader still maps it (its mapping holds LOCK_SH)
                         └──> unlink; the reader keeps its pages

    write(oid) ──> claim: rename .free/<smallest that fits> -> <oid>.tmp
                   MapCache: a mapping of that inode this process already
                   holds?  copy through it (memcpy speed); else map it, keep it

Readers pin a file by taking ``LOCK_SH`` before mapping it (``shm.map_file``);
the lock lives as long as the mapping, i.e. as long as any zero-copy view.
Cached mappings hold no lock: a file is only written after its claim, and
the claim (an atomic rename) gives one process the file.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
import time
from collections import OrderedDict

POOL_MIN = 1 << 20  # objects at least this big are recycled; smaller ones are unlinked
POOL_MAX_FILES = 16
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)


def fits(capacity: int, need: int) -> bool:
    """A parked file of ``capacity`` bytes is used for ``need`` bytes: big enough, not wasteful."""
    return need <= capacity <= 2 * need + POOL_MIN


class FreePool:
    """The parked files of one rank's store, in ``<store dir>/.free``.

    Names are ``<capacity>.<time ns>.<pid>``: the capacity lets writers choose
    without opening anything, the time orders trimming (oldest first).  Any
    process of the node may claim; only the process that frees objects (the
    raylet, or rank 0's service thread) parks and trims.
    """

    def __init__(self, store_dir: str):
        self.dir = os.path.join(store_dir, ".free")

    def files(self) -> list[tuple[int, int, str]]:
        """(capacity, age stamp, name) of every parked file."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
                out.append((int(parts[0]), int(parts[1]), name))
        return out

    def bytes(self) -> int:
        return sum(cap for cap, _, _ in self.files())

    def claim(self, need: int, dest: str) -> int | None:
        """Move the smallest parked file that fits ``need`` bytes to ``dest``; its capacity,
        or None when none fits."""
        for cap, _, name in sorted(self.files()):
            if not fits(cap, need):
                continue
            try:
                os.rename(os.path.join(self.dir, name), dest)
            except FileNotFoundError:
                continue  # another process took it
            return cap
        return None

    def park(self, path: str, limit: int) -> bool:
        """Park the object file ``path`` if no reader maps it and the pool (kept under
        ``limit`` bytes and ``POOL_MAX_FILES`` files, oldest trimmed first) has room."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            cap = os.fstat(fd).st_size
            if cap < POOL_MIN or cap > limit:
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return False  # a reader holds a view: its bytes must stay
                raise
            parked = sorted(self.files(), key=lambda f: f[1])
            total = sum(c for c, _, _ in parked)
            while parked and (total + cap > limit or len(parked) >= POOL_MAX_FILES):
                c, _, name = parked.pop(0)
                total -= c
                _unlink(os.path.join(self.dir, name))
            os.makedirs(self.dir, exist_ok=True)
            os.rename(path, os.path.join(self.dir, f"{cap}.{time.time_ns()}.{os.getpid()}"))
            return True
        finally:
            os.close(fd)  # drops the exclusive lock

    def trim(self, nbytes: int) -> int:
        """Unlink parked files, oldest first, until ``nbytes`` are released; bytes released."""
        freed = 0
        for cap, _, name in sorted(self.files(), key=lambda f: f[1]):
            if freed >= nbytes:
                break
            if _unlink(os.path.join(self.dir, name)):
                freed += cap
        return freed


def _unlink(path: str) -> bool:
    """Remove ``path``; False if it was gone (claimed or removed meanwhile)."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False  # claimed meanwhile


class MapCache:
    """This process's last few shared mappings of big object files, by inode.

    A mapping whose page tables are filled turns the next write of a recycled
    file into a plain memcpy.  Entries hold their own file descriptor and no
    lock; one whose file was unlinked is dropped (``prune``) so its pages can
    go back to the system.
    """

    def __init__(self, entries: int = 4, max_bytes: int = 4 << 30):
        self.entries = entries
        self.max_bytes = max_bytes
        self._maps: OrderedDict[tuple[int, int], tuple[int, mmap.mmap]] = OrderedDict()
        self._lock = threading.Lock()

    def view(self, path: str, populate: bool = True) -> memoryview:
        """A writable view of the whole file ``path``, through a cached mapping when there is
        one.  Release the view when done (``with cache.view(p) as v``)."""
        fd = os.open(path, os.O_RDWR)
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with self._lock:
            self._prune_locked()
            hit = self._maps.get(key)
            if hit is not None and len(hit[1]) == st.st_size:
                os.close(fd)
                self._maps.move_to_end(key)
                return memoryview(hit[1])
        try:
            flags = mmap.MAP_SHARED | (_POPULATE if populate else 0)
            mm = mmap.mmap(fd, st.st_size, flags=flags)
        except BaseException:
            os.close(fd)
            raise
        if st.st_size > self.max_bytes:
            os.close(fd)
            return memoryview(mm)
        with self._lock:
            old = self._maps.pop(key, None)
            if old is not None:
                _drop(old)
            self._maps[key] = (fd, mm)
            while len(self._maps) > self.entries or self._bytes() > self.max_bytes:
                _drop(self._maps.popitem(last=False)[1])
        return memoryview(mm)

    def view_of(self, fd: int) -> memoryview:
        """A view of the whole file open as ``fd`` (which may hold a lock: the cached
        mapping is made from a new open of the same file, so it holds none).  Read
        through it only: without /proc the fallback maps ``fd`` read-only, uncached."""
        try:
            return self.view(f"/proc/self/fd/{fd}")
        except FileNotFoundError:
            return memoryview(mmap.mmap(fd, os.fstat(fd).st_size, prot=mmap.PROT_READ))

    def prune(self) -> None:
        """Forget mappings of files that were unlinked."""
        with self._lock:
            self._prune_locked()

    def clear(self) -> None:
        with self._lock:
            while self._maps:
                _drop(self._maps.popitem()[1])

    def __len__(self) -> int:
        return len(self._maps)

    def _bytes(self) -> int:
        return sum(len(mm) for _, mm in self._maps.values())

    def _prune_locked(self) -> None:
        for key, (fd, mm) in list(self._maps.items()):
            if os.fstat(fd).st_nlink == 0:
                del self._maps[key]
                _drop((fd, mm))


def _drop(entry: tuple[int, mmap.mmap]) -> None:
    fd, mm = entry
    os.close(fd)
    try:
        mm.close()
    except BufferError:
        pass  # a view is still out; the mapping goes when it does
