"""Moving an object's bytes between ranks with MPI one-sided Get.

Every rank exposes one staging window, allocated once at start-up by MPI
(``Win.Allocate``: on one host it is shared memory and a ``Get`` is a single
memcpy; across hosts it is registered memory for the fabric's RDMA), locked
once for the whole run (``Lock_all``), and cut into slots.  A pull::

    requester                                   owner
    PULL(oid, me) ───────────────────────────>  PushJob: pin and map the object file
                  <──────── DATA(oid, nbytes)   (nbytes = -1: not here, lost)
    PullJob: take a destination file (recycled
    from the store's pool when one fits)
                  <── CHUNK(oid, off, slot, n)  copy a chunk into a free slot
    Get(slot -> file[off:off+n]); Flush
    SLOT_FREE(oid, slot) ────────────────────>  the slot takes the next chunk
    ... all chunks: rename the file into the store, call back

The short way, one copy: the owner Puts the object straight into the
requester's part of the arena window (rank 0's for the driver, ``arena.py``;
a raylet's for its tasks, ``regions.py``)::

    requester                                   owner
    DELIVER(oid, me, offset, room) ───────────> PushJob: pin and map the object file
                                                Put(file[off:off+n] -> arena[offset+off]),
                                                chunk by chunk between other work; Flush
                  <──────── DELIVERED(oid, nbytes)  (-1: not here; -2: more than room)

Several chunks are in flight at once (one per slot) and several pulls share
the slots, so the owner's copy of chunk k+1 overlaps the requester's Get of
chunk k.  Only the small control messages are two-sided.  Both ends go through
their store's mapping cache (``_store/pool.py``), so when pulls of similar
sizes repeat, the owner's copy reads and the requester's ``Get`` writes pages
whose page tables are already filled.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import Any, Callable

from .._protocol import messages as m


class PushJob:
    """The owner's side of a pull (into its staging slots) or of a delivery (``Put`` into
    the requester's arena at ``offset``)."""
    __slots__ = ("oid", "dest", "view", "offset", "next_off")

    def __init__(self, oid: str, dest: int, view: memoryview, offset: int = 0):
        self.oid = oid
        self.dest = dest
        self.view = view  # pinned: the file is not recycled while it is copied
        self.offset = offset
        self.next_off = 0


# A delivery Puts at least this much at a time (a remainder of less than two pieces goes in
# one Put), for up to PUT_SLICE seconds per turn of the event loop.  To a rank of the same
# host, big: there a Put is a memcpy, and glibc's memcpy streams past the cache (non-temporal
# stores) only above a size of its own (240 MiB on the 2-core VM of benchmarks/RESULTS.md):
# 1 GiB Put in 32 MiB pieces ran at 8.5 GB/s there, in 256 MiB pieces at 12.0, in one Put at
# 11.6; a turn of the owner's loop then waits up to ~45 ms for its other messages.  Over a
# network smaller, so that the owner's loop takes turns between deliveries and its messages.
PUT_CHUNK = 256 << 20
PUT_CHUNK_WIRE = 32 << 20
PUT_SLICE = 0.02


def put_piece(left: int, near: bool = True) -> int:
    """How much of the ``left`` bytes of a delivery the next Put moves (``near``: to a rank
    of this host)."""
    chunk = PUT_CHUNK if near else PUT_CHUNK_WIRE
    return left if left < 2 * chunk else chunk


class PullJob:
    __slots__ = ("oid", "src", "nbytes", "got", "view", "size", "path")

    def __init__(self, oid: str, src: int, nbytes: int, path: str, store: Any):
        self.oid, self.src, self.nbytes, self.got, self.path = oid, src, nbytes, 0, path
        self.view, self.size = store.open_dest(path, nbytes)  # size: the file's, >= nbytes

    def close(self) -> None:
        self.view.release()


class Transfers:
    """Both sides of every pull of one rank; the event loop feeds it messages."""

    def __init__(self, transport: Any, store: Any, on_pulled: Callable[[str, int], None],
                 on_lost: Callable[[str, int], None], alive: Callable[[], None] | None = None,
                 on_delivered: Callable[[str, int, int], None] | None = None):
        self.t = transport
        self.alive = alive              # called while waiting on a Get; raises to give up
        self.store = store
        self.on_pulled = on_pulled      # (oid, src): the bytes are in the local store now
        self.on_lost = on_lost          # (oid, src): the owner does not have them
        self.slot_size = 0
        self.free_slots: deque[int] = deque()
        self.pushes: deque[PushJob] = deque()
        self.pulls: dict[str, PullJob] = {}
        self.puts: deque[PushJob] = deque()  # deliveries
        self.on_delivered_cb = on_delivered  # (oid, owner, nbytes): the Put into our arena is complete
        self.bytes_pulled = 0
        self.near: set[int] = set()  # the other ranks of this host (put_piece)

    def start(self) -> None:
        """Call once the transport's staging window is open."""
        self.slot_size = self.t.slot_size
        self.free_slots = deque(range(self.t.nslots))

    # -- requester ---------------------------------------------------------
    def request(self, oid: str, owner: int) -> None:
        self.t.send(owner, (m.PULL, oid, self.t.rank))

    def on_data(self, src: int, oid: str, nbytes: int) -> None:
        if nbytes < 0:
            self.on_lost(oid, src)
            return
        job = PullJob(oid, src, nbytes, self.store.path(oid) + ".pull", self.store)
        self.pulls[oid] = job
        if nbytes == 0:
            self._finish(job)

    def on_chunk(self, src: int, oid: str, off: int, slot: int, n: int) -> None:
        job = self.pulls[oid]
        self.t.get_from(src, slot * self.slot_size, job.view[off:off + n], self.alive)
        self.t.send(src, (m.SLOT_FREE, oid, slot))
        self.t.flush()  # now, not at the end of the round: the owner refills the slot
        job.got += n
        if job.got >= job.nbytes:
            self._finish(job)

    def _finish(self, job: PullJob) -> None:
        del self.pulls[job.oid]
        job.close()
        os.rename(job.path, self.store.path(job.oid))
        self.store.note(job.oid, job.size)
        self.bytes_pulled += job.nbytes
        self.on_pulled(job.oid, job.src)

    # -- owner -------------------------------------------------------------
    def on_pull(self, src: int, oid: str, requester: int) -> None:
        try:
            view = self.store.pin_raw(oid)
        except FileNotFoundError:
            self.t.send(requester, (m.DATA, oid, -1))
            return
        self.t.send(requester, (m.DATA, oid, view.nbytes))
        self.t.flush()  # the requester readies its destination while the first chunk is copied
        if view.nbytes:
            self.pushes.append(PushJob(oid, requester, view))
        else:
            view.release()
        self.pump()

    def on_slot_free(self, src: int, oid: str, slot: int) -> None:
        self.free_slots.append(slot)
        self.pump()

    def pump(self) -> None:
        """Fill free slots with the next chunks, taking turns between pulls."""
        stage, size = self.t.stage, self.slot_size
        while self.free_slots and self.pushes:
            job = self.pushes.popleft()
            slot = self.free_slots.popleft()
            off = job.next_off
            n = min(size, job.view.nbytes - off)
            base = slot * size
            stage[base:base + n] = job.view[off:off + n]
            job.next_off = off + n
            self.t.send(job.dest, (m.CHUNK, job.oid, off, slot, n))
            self.t.flush()  # the requester's Get of this chunk overlaps the copy of the next
            if job.next_off < job.view.nbytes:
                self.pushes.append(job)
            else:
                job.view.release()

    # -- deliveries into a requester's arena ---------------------------------
    def on_deliver(self, src: int, oid: str, requester: int, offset: int, room: int) -> None:
        try:
            view = self.store.pin_raw(oid)
        except FileNotFoundError:
            self._delivered(requester, oid, -1)
            return
        if view.nbytes > room:
            view.release()
            self._delivered(requester, oid, -2)
            return
        self.puts.append(PushJob(oid, requester, view, offset))
        self.pump_puts()

    def _delivered(self, requester: int, oid: str, nbytes: int) -> None:
        self.t.send(requester, (m.DELIVERED, oid, nbytes))
        self.t.flush()

    def pump_puts(self) -> None:
        """Put the next chunks of the deliveries in progress, taking turns, for up to
        ``PUT_SLICE`` seconds."""
        end = time.monotonic() + PUT_SLICE
        while self.puts and time.monotonic() < end:
            job = self.puts.popleft()
            off = job.next_off
            n = put_piece(job.view.nbytes - off, job.dest in self.near)
            if n:
                self.t.put_to(job.dest, job.offset + off, job.view[off:off + n], self.alive)
            job.next_off = off + n
            if job.next_off < job.view.nbytes:
                self.puts.append(job)
                continue
            nbytes = job.view.nbytes
            job.view.release()
            self._delivered(job.dest, job.oid, nbytes)

    def on_delivered(self, src: int, oid: str, nbytes: int) -> None:
        if self.on_delivered_cb is not None:
            self.on_delivered_cb(oid, src, nbytes)

    def busy(self) -> bool:
        return bool(self.pushes or self.pulls or self.puts)
