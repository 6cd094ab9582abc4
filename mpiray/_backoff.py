"""How long an event loop with nothing to do sleeps before polling MPI again.

MPI gives no file descriptor to wait on and MPICH's blocking calls spin, so
loops poll.  ``Backoff`` keeps that cheap and fast: for ``spin`` seconds after
activity (if set) it says 0 — poll again at once, yielding the core to any
process that wants it (a reply a few tens of microseconds away then costs no
wake-up from a timer: the raylet's sync round trip 380 -> 250 µs on a 2-core
VM); then for ``fast_window``
seconds after activity it sleeps only ``fast`` (a reply usually comes within
that window, and a round trip is two such hops), then sleeps for doubling
intervals up to ``busy_max``, and after ``idle_after`` seconds of nothing at
all it settles at ``idle`` (50 wake-ups a second), and after ``deep_after``
seconds at ``deep`` (20 a second): ~0% of a core.  A loop that every rank able to send it
anything wakes on arrival (all of them on its host, where senders poke its wake-up pipe:
``_comm/wake.py``) has no message to poll for, only its once-a-second chores: it sleeps
``DEEP_POKED`` instead, and goes idle ``POKED_IDLE_AFTER`` after activity.
"""

from __future__ import annotations

import time


DEEP_POKED = 0.5  # s: the deep sleep of a loop whose every sender pokes it (2 wake-ups a second)
POKED_IDLE_AFTER = 0.025  # s: ... and how long after activity it polls at least every ms (> POKE_GAP)
# after a poke a loop polls at least this often for this long (``Backoff.poked``), in case
# the message it announces shows in MPI a little after the poke (then it waits 20 ms, not 0.5 s)
POKED_RECHECK, POKED_RECHECK_EVERY = 0.1, 0.02


class Backoff:
    __slots__ = ("spin", "fast", "fast_window", "busy_max", "idle_after", "idle", "deep_after", "deep",
                 "_last", "_delay", "_poked")

    def __init__(self, fast: float = 3e-5, fast_window: float = 5e-3, busy_max: float = 1e-3,
                 idle_after: float = 0.5, idle: float = 0.02, deep_after: float = 2.0,
                 deep: float = 0.05, spin: float = 0.0, poked: bool = False):
        """``poked``: every rank that sends this loop anything pokes its wake-up pipe."""
        if poked:
            idle_after, deep = POKED_IDLE_AFTER, DEEP_POKED
        self.spin = spin
        self.fast, self.fast_window, self.busy_max = fast, fast_window, busy_max
        self.idle_after, self.idle = idle_after, idle
        self.deep_after, self.deep = deep_after, deep
        self._last = time.monotonic()
        self._delay = fast
        self._poked = float("-inf")

    def poked(self, when: float) -> None:
        """The loop's pipe was poked at ``when``: poll every ``POKED_RECHECK_EVERY`` for a
        while, in case the message it announces shows in MPI a little after the poke."""
        self._poked = max(self._poked, when)

    def reset(self) -> None:
        self._last = time.monotonic()
        self._delay = self.fast

    def note(self, when: float) -> None:
        """Activity at ``when`` (seen by another thread): back to short waits if it is newer
        than what this back-off knew."""
        if when > self._last:
            self._last = when
            self._delay = self.fast

    def next(self) -> float:
        """Seconds to sleep now (0: poll again at once, yielding the core)."""
        now = time.monotonic()
        quiet = now - self._last
        if quiet < self.spin:
            return 0.0
        if quiet < self.fast_window:
            return self.fast
        if quiet > self.idle_after:
            delay = self.deep if quiet > self.deep_after else self.idle
            return min(delay, POKED_RECHECK_EVERY) if now - self._poked < POKED_RECHECK else delay
        self._delay = min(self.busy_max, self._delay * 2)
        return self._delay


def tighten_timer_slack(ns: int = 1000) -> None:
    """Let short sleeps of this thread be short (Linux adds 50 µs of slack by default)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(29, ns, 0, 0, 0)  # PR_SET_TIMERSLACK
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


# A rank waiting for an owner to Put bytes into its arena polls about 16 times in the shortest
# time the Put could take (at 40 GB/s, above any copy seen), at most every millisecond: the
# end is seen at most ~6% late and the copy keeps the host (polling every 30 µs through a 1 GiB
# Put took half a core of a 2-core host on a raylet, a whole one on the driver)
FASTEST_PUT = 40e9
DELIVERY_POLLS = 16


def delivery_poll_interval(nbytes: int) -> float:
    """Seconds between polls while waiting for a delivery of ``nbytes``."""
    return min(1e-3, nbytes / FASTEST_PUT / DELIVERY_POLLS)
