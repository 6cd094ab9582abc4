"""Serialization: cloudpickle with pickle protocol 5 out-of-band buffers.

A serialized value is a ``Blob``: the pickle stream, the out-of-band buffers
(numpy/CuPy payloads, never copied through pickle) and the ids of the
ObjectRefs it contains.  Small buffers stay in-band; large ones are written
straight into the node store or sent as separate MPI buffers.

ObjectRefs pickle as their id.  While ``dumps`` runs, every ref met is recorded
in the active context (so the container keeps it alive); while ``loads`` runs,
refs are rebuilt against the tracker of the process that reads them.
"""

from __future__ import annotations

import pickle
from typing import Any, NamedTuple

import cloudpickle

from ._objref import ObjectRef, RefTracker, context

INBAND_LIMIT = 64 * 1024  # buffers smaller than this stay inside the pickle stream

_ctx = context  # ObjectRef.__reduce__ reads it (_objref.py)


class Blob(NamedTuple):
    data: bytes
    buffers: list  # list of memoryview/bytes/PickleBuffer
    refs: tuple  # ids of ObjectRefs inside

    def __reduce__(self):  # half the time of a named tuple's default (one Blob per value sent)
        return (Blob, (self.data, self.buffers, self.refs))

    def nbytes(self) -> int:
        if not self.buffers:
            return len(self.data)
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def inline(self) -> "Blob":
        """A copy whose buffers are plain bytes, safe to send in a message."""
        if not self.buffers:
            return self
        return Blob(self.data, [bytes(memoryview(b).cast("B")) if not isinstance(b, bytes) else b
                                for b in self.buffers], self.refs)


# Exact types the standard pickler writes by value, with no class to look up.  A value made
# only of these, ObjectRefs and small tuples/lists/dicts of them (the usual tiny-task
# argument or result) is pickled by the plain C pickler: the same meaning as cloudpickle's
# bytes at a fraction of the cost (cloudpickle calls a Python hook for each object).
ATOMS = frozenset({int, float, complex, str, bytes, bool, type(None)})
_SCAN_ITEMS = 4096  # items looked at before a value is left to cloudpickle
_OTHER, _PLAIN, _REFS = 0, 1, 2  # what _scan found: something else, only atoms, atoms and refs


def _scan(value: Any, depth: int, left: list) -> int:
    kind = type(value)
    if kind in ATOMS:
        return _PLAIN
    if kind is ObjectRef:
        return _REFS
    if depth > 2:
        return _OTHER
    if kind is tuple or kind is list:
        items = value
    elif kind is dict:
        for k in value:
            if type(k) not in ATOMS:
                return _OTHER
        items = value.values()
    else:
        return _OTHER
    left[0] -= len(value)
    if left[0] < 0:
        return _OTHER
    found = _PLAIN
    for v in items:
        kind = type(v)
        if kind in ATOMS:
            continue
        if kind is ObjectRef:
            found = _REFS
            continue
        inner = _scan(v, depth + 1, left)
        if inner == _OTHER:
            return _OTHER
        found = max(found, inner)
    return found


def dumps(value: Any, inband_limit: int = INBAND_LIMIT) -> Blob:
    """Serialize ``value``; raises TypeError naming what could not be pickled."""
    found = _scan(value, 0, [_SCAN_ITEMS])
    if found == _PLAIN:
        return Blob(pickle.dumps(value, protocol=5), [], ())
    pickler = pickle.dumps if found == _REFS else cloudpickle.dumps
    buffers: list = []

    def on_buffer(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < inband_limit:
            return True  # in-band
        buffers.append(raw)
        return False

    outer = getattr(_ctx, "seen", None)
    _ctx.seen = []
    try:
        data = pickler(value, protocol=5, buffer_callback=on_buffer)
        refs = tuple(dict.fromkeys(_ctx.seen))
    except Exception as exc:
        raise TypeError(f"could not serialize {type(value).__name__} value: "
                        f"{type(exc).__name__}: {exc}") from exc
    finally:
        _ctx.seen = outer
    if outer is not None:
        outer.extend(refs)
    return Blob(data, buffers, refs)


def loads(data: bytes, buffers: list, tracker: RefTracker | None) -> Any:
    outer = getattr(_ctx, "tracker", None)
    _ctx.tracker = tracker
    try:
        return pickle.loads(data, buffers=buffers)
    finally:
        _ctx.tracker = outer


def dumps_function(func: Any) -> bytes:
    try:
        return cloudpickle.dumps(func, protocol=5)
    except Exception as exc:
        raise TypeError(f"could not serialize remote function {getattr(func, '__qualname__', func)!r}: "
                        f"{type(exc).__name__}: {exc}") from exc
