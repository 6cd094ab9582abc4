"""ObjectRef: a handle to a value that exists (or will) somewhere in the cluster.

Every live ObjectRef is counted by the ``RefTracker`` of its process; when a
process's count for an id falls to zero the tracker queues a release for the
GCS, which frees the object once no process, pending task or containing object
holds it.  A ref that is pickled records itself in the active serialization
context, so the object or task that carries it keeps it alive.
"""

from __future__ import annotations

import threading
from collections import deque


class RefTracker:
    """Counts live ObjectRefs per id in one process; records 0<->1 transitions."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.RLock()
        self.changes: deque[tuple[str, int]] = deque()  # (id, +1 acquired | -1 released)

    def add(self, object_id: str, announce: bool = True) -> None:
        """Count one more ref; ``announce=False`` when the GCS already counted this hold."""
        with self._lock:
            n = self._counts.get(object_id, 0)
            self._counts[object_id] = n + 1
            if n == 0 and announce:
                self.changes.append((object_id, 1))

    def remove(self, object_id: str) -> None:
        with self._lock:
            n = self._counts.get(object_id, 0) - 1
            if n > 0:
                self._counts[object_id] = n
            elif n == 0:
                del self._counts[object_id]
                self.changes.append((object_id, -1))

    def drain(self) -> list[tuple[str, int]]:
        """Net changes since the last drain (an acquire and release of one id cancel)."""
        with self._lock:
            net: dict[str, int] = {}
            while self.changes:
                oid, d = self.changes.popleft()
                net[oid] = net.get(oid, 0) + d
        return [(oid, d) for oid, d in net.items() if d]

    def live(self) -> int:
        return len(self._counts)


# The serialization context of this thread (set by _serialization): while ``dumps`` runs,
# ``seen`` collects the ids of the refs pickled; while ``loads`` runs, ``tracker`` counts
# the refs rebuilt.
context = threading.local()


def _rebuild(object_id: str) -> "ObjectRef":
    return ObjectRef(object_id, getattr(context, "tracker", None))


class ObjectRef:
    """A reference to an object in the cluster; pass it to tasks or ``get`` it."""

    __slots__ = ("_id", "_tracker", "__weakref__")

    def __init__(self, object_id: str, tracker: RefTracker | None = None):
        self._id = object_id
        self._tracker = tracker
        if tracker is not None:
            tracker.add(object_id)

    def __del__(self) -> None:
        tracker = self._tracker
        if tracker is not None:
            try:
                tracker.remove(self._id)
            except Exception:  # interpreter shutdown
                pass

    @property
    def id(self) -> str:
        return self._id

    def hex(self) -> str:
        return self._id

    def task_id(self) -> str:
        return self._id.rsplit(".", 1)[0]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id})"

    def __reduce__(self):
        seen = getattr(context, "seen", None)
        if seen is not None:
            seen.append(self._id)
        return _rebuild, (self._id,)

    def __await__(self):  # pragma: no cover - asyncio support is not built yet
        raise TypeError("awaiting an ObjectRef is not supported yet; call mpiray.get(ref)")
