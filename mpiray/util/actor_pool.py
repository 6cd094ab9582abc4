"""``ActorPool``: spread work over a fixed set of actors (Ray's ``ray.util.ActorPool``).

``fn(actor, value)`` must return an ObjectRef (``lambda a, v: a.work.remote(v)``).
Each actor runs one piece at a time; the rest wait in the pool until an actor is
free.  Results come back in submission order (``map``, ``get_next``) or as they
finish (``map_unordered``, ``get_next_unordered``).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterable, Iterator

from .. import _api
from ..exceptions import GetTimeoutError


class ActorPool:
    def __init__(self, actors: Iterable[Any]):
        self._idle = list(actors)
        self._pending: deque[tuple[Callable, Any]] = deque()  # submitted, no actor free yet
        self._by_ref: dict[Any, tuple[int, Any]] = {}  # ObjectRef -> (index, actor)
        self._by_index: dict[int, Any] = {}  # index -> ObjectRef (in flight)
        self._next_submit = 0  # index of the next piece submitted
        self._next_return = 0  # index of the next result get_next returns

    # -- submitting ------------------------------------------------------------
    def submit(self, fn: Callable[[Any, Any], Any], value: Any) -> None:
        """Run ``fn(actor, value)`` on a free actor, or as soon as one is free."""
        if self._idle:
            actor = self._idle.pop()
            ref = fn(actor, value)
            if isinstance(ref, list):  # a method with num_returns > 1
                ref = tuple(ref)
            self._by_ref[ref] = (self._next_submit, actor)
            self._by_index[self._next_submit] = ref
            self._next_submit += 1
        else:
            self._pending.append((fn, value))

    def has_next(self) -> bool:
        """Whether a result is still to be returned."""
        return bool(self._by_index) or bool(self._pending)

    def has_free(self) -> bool:
        return bool(self._idle) and not self._pending

    # -- results ---------------------------------------------------------------
    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        if self._next_return >= self._next_submit:
            raise ValueError("it is not allowed to call get_next() after get_next_unordered()")
        ref = self._by_index[self._next_return]
        if timeout is not None:
            ready, _ = _api.wait(list(ref) if isinstance(ref, tuple) else [ref],
                                 num_returns=len(ref) if isinstance(ref, tuple) else 1, timeout=timeout)
            if not ready:  # (it stays the next result)
                if ignore_if_timedout:
                    return None
                raise GetTimeoutError("timed out waiting for the next result")
        del self._by_index[self._next_return]
        self._next_return += 1
        _, actor = self._by_ref.pop(ref)
        self._return_actor(actor)
        return _api.get(list(ref) if isinstance(ref, tuple) else ref)

    def get_next_unordered(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """Whichever result is ready first."""
        if not self.has_next():
            raise StopIteration("no more results to get")
        flat = [r for k in self._by_ref for r in (k if isinstance(k, tuple) else (k,))]
        ready, _ = _api.wait(flat, num_returns=1, timeout=timeout)
        if not ready:
            if ignore_if_timedout:
                return None
            raise GetTimeoutError("timed out waiting for a result")
        ref = ready[0]
        if ref not in self._by_ref:  # one of a call's several results
            ref = next(k for k in self._by_ref if isinstance(k, tuple) and ref in k)
        index, actor = self._by_ref.pop(ref)
        del self._by_index[index]
        self._next_return = max(self._next_return, index + 1)  # (get_next goes on after it)
        self._return_actor(actor)
        return _api.get(list(ref) if isinstance(ref, tuple) else ref)

    def map(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """``fn`` over ``values`` on the actors; results in the order of ``values``."""
        while self.has_next():  # results of earlier submits are not this map's
            self.get_next_unordered()
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next()

    def map_unordered(self, fn: Callable[[Any, Any], Any], values: Iterable[Any]) -> Iterator[Any]:
        """Like ``map``, results as they finish."""
        while self.has_next():
            self.get_next_unordered()
        for v in values:
            self.submit(fn, v)
        while self.has_next():
            yield self.get_next_unordered()

    # -- the actors --------------------------------------------------------------
    def _return_actor(self, actor: Any) -> None:
        self._idle.append(actor)
        if self._pending:
            self.submit(*self._pending.popleft())

    def push(self, actor: Any) -> None:
        """Add an actor to the pool."""
        busy = {a for _, a in self._by_ref.values()}
        if actor in self._idle or actor in busy:
            raise ValueError("that actor is already in the pool")
        self._return_actor(actor)

    def pop_idle(self) -> Any | None:
        """Take an idle actor out of the pool (None if none is idle)."""
        return self._idle.pop() if self.has_free() else None
