"""The driver's reads of other hosts' objects through rank 0's delivery arena.

A mixin of ``DriverRuntime`` (``driver.py``); the arena itself is
``_store/arena.py`` and the owner's side ``_store/transfer.py``::

    get([a, b, c]) ──> _deliveries_ahead: a region each, DELIVER to every owner at once
                  ──> _deliver(a): wait (polling) for DELIVERED, unpickle from the region
                      ... b, c: most of their bytes have moved meanwhile

A ``_Delivery`` lives in ``Service.deliveries`` (by object id and owner: a retry
after the object moved asks its new owner) from DELIVER to the first waiter
that sees it done; one that nobody waits for any more (a get that timed out or
failed) gives its region back when it ends (``Service._delivered``).
"""

from __future__ import annotations

import time
from typing import Any

from .. import exceptions as exc_mod
from .._backoff import delivery_poll_interval
from .._protocol import messages as m
from .._serialization import loads
from .._store.shm import parse

DELIVERY_RATE = 4e9  # bytes/s: a driver waiting for a delivery polls as long as that would take


class LookAgain(Exception):
    """The object moved or is being rebuilt while we fetched it."""


class _Delivery:
    """An object being Put into rank 0's arena by one owner."""
    __slots__ = ("key", "info", "offset", "nbytes", "waiters", "region")

    def __init__(self, key: tuple, info: tuple, offset: int):
        self.key = key  # (object id, owner rank): its place in Service.deliveries
        self.info = info  # the ObjInfo it was asked for (a rebuilt object's differs)
        self.offset = offset
        self.region: Any = None
        self.nbytes: int | None = None  # set by DELIVERED: the object's length, -1 lost, -2 no room
        self.waiters = 0


NO_ROOM = object()  # a delivery was not possible: pull the object into the store instead


def drop_if_unwanted(table: dict, arena: Any, d: _Delivery) -> None:
    """(Holding ``cond``.) A delivery that ended and that nobody waits for any more (its
    get gave up, failed or took another way) leaves ``table``; its region is free again."""
    if not d.waiters and d.nbytes is not None and table.get(d.key) is d:
        del table[d.key]
        arena.release(d.offset)


class Deliveries:
    """Needs ``arena``, ``delivered``, ``service``, ``gcs``, ``tracker``, ``_can_map``,
    ``_cond_wait`` and ``_stop_polling`` from ``DriverRuntime``."""

    def _deliveries_ahead(self, ids: list[str], infos: dict) -> dict:
        """Ask every owner at once when a get needs several objects from other hosts, so
        their deliveries overlap; {oid: _Delivery} reserved for this get."""
        if self.arena is None:
            return {}
        wanted = [oid for oid in dict.fromkeys(ids) if infos[oid][0] == "shm"
                  and not self._can_map(infos[oid][1]) and oid not in self.delivered]
        if len(wanted) < 2:
            return {}
        ahead = {}
        with self.service.cond:
            for oid in wanted:
                d = self._request_delivery(oid, infos[oid])
                if d is not None:
                    ahead[oid] = d
        self.service.wake()
        return ahead

    def _request_delivery(self, oid: str, info: tuple) -> Any:
        """(Holding ``cond``.) The delivery of ``oid`` in progress, or a new one; counted
        as waited for.  None when the arena has no room or rank 0 holds a copy."""
        entry = self.gcs.objects.get(oid)
        if entry is not None and 0 in entry.copies:
            return None
        key = (oid, info[1])
        d = self.service.deliveries.get(key)
        if d is not None and d.info != info:
            return None  # an abandoned one for an older copy still runs: pull this one
        if d is None:
            offset = self.arena.alloc(info[2])
            if offset is None:
                return None
            d = self.service.deliveries[key] = _Delivery(key, info, offset)
            self.gcs.out.append((info[1], (m.DELIVER, oid, 0, offset, info[2])))
        d.waiters += 1
        return d

    def _unwait(self, d: Any) -> None:
        """(Holding ``cond``.) One waiter less."""
        d.waiters -= 1
        drop_if_unwanted(self.service.deliveries, self.arena, d)

    def _deliver(self, oid: str, info: tuple, end: float | None, d: Any = None) -> Any:
        """The value of another host's object, Put by its owner into rank 0's arena (one
        copy); ``NO_ROOM`` when the arena cannot take it (then it is pulled instead).
        ``d``: its delivery, already asked for by this get."""
        if self.arena is None:
            return NO_ROOM
        region = self._await_delivery(oid, info, end, d)
        if region is None:
            return NO_ROOM
        data, bufs = parse(memoryview(region).cast("B").toreadonly())
        return loads(data, bufs, self.tracker)

    def _await_delivery(self, oid: str, info: tuple, end: float | None, d: Any) -> Any:
        """The exporter of the object's arena region once its owner has Put it there;
        None when it is not delivered (no room, or already in this rank's store)."""
        service = self.service
        with service.cond:
            region = self.delivered.get(oid)  # a value of it is alive: read the same bytes
            if region is not None:
                if d is not None:
                    self._unwait(d)
                return region
            if d is None:
                d = self._request_delivery(oid, info)
                if d is None:
                    return None
                service.wake()
            # poll, not sleep, while the bytes move (~4 GB/s or better) and 5 ms more: the
            # service thread's hand-off cost a 100 MiB delivery ~2 ms
            started = time.monotonic() + info[2] / DELIVERY_RATE
            nap = delivery_poll_interval(info[2])
            try:
                with self.gcs.watching({oid}):  # (a rebuild of it wakes this wait too)
                    while d.nbytes is None:
                        entry = self.gcs.objects.get(oid)
                        if entry is None:
                            raise exc_mod.ObjectLostError(f"object {oid} was freed during get()")
                        if entry.info != info:
                            raise LookAgain  # lost at its owner: rebuilt or moved meanwhile
                        self._cond_wait(end, oid, started, nap)
            except BaseException:
                self._unwait(d)  # freed now if it ended, else when it ends
                raise
            finally:
                self._stop_polling()
            d.waiters -= 1
            if service.deliveries.get(d.key) is d:  # the first waiter to see it done takes it
                del service.deliveries[d.key]
                if d.nbytes >= 0:
                    d.region = self.delivered[oid] = self.arena.region(d.offset, d.nbytes)
                else:
                    self.arena.release(d.offset)
        if d.nbytes == -1:
            raise FileNotFoundError(oid)  # gone at its owner: get() reports it lost
        return d.region  # None for -2: larger than the room asked for

