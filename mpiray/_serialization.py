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
import threading
from typing import Any, NamedTuple

import cloudpickle

from ._objref import ObjectRef, RefTracker

INBAND_LIMIT = 64 * 1024  # buffers smaller than this stay inside the pickle stream

_ctx = threading.local()


class Blob(NamedTuple):
    data: bytes
    buffers: list  # list of memoryview/bytes/PickleBuffer
    refs: tuple  # ids of ObjectRefs inside

    def nbytes(self) -> int:
        return len(self.data) + sum(memoryview(b).nbytes for b in self.buffers)

    def inline(self) -> "Blob":
        """A copy whose buffers are plain bytes, safe to send in a message."""
        return Blob(self.data, [bytes(memoryview(b).cast("B")) if not isinstance(b, bytes) else b
                                for b in self.buffers], self.refs)


def _rebuild(object_id: str) -> ObjectRef:
    return ObjectRef(object_id, getattr(_ctx, "tracker", None))


def rebuild_ref(ref: ObjectRef):
    seen = getattr(_ctx, "seen", None)
    if seen is not None:
        seen.append(ref.id)
    return _rebuild, (ref.id,)


def dumps(value: Any, inband_limit: int = INBAND_LIMIT) -> Blob:
    """Serialize ``value``; raises TypeError naming what could not be pickled."""
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
        data = cloudpickle.dumps(value, protocol=5, buffer_callback=on_buffer)
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
