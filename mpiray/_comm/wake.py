"""Waking a sleeping rank of the same host when a message is sent to it.

An idle rank polls MPI less and less often (``_backoff.Backoff``: every 20 ms
after half a second, every 50 ms after two), so that an idle cluster costs
almost no CPU; MPI itself cannot wake a process that sleeps.  So each rank
listens on a named pipe in its host's session folder, waits on it instead of
sleeping blind, and a rank of the same host that sends it a message (other
than a heartbeat) writes a byte into that pipe unless it poked it less than
``POKE_GAP`` ago: a rank poked that recently still polls at least every
millisecond, and waking it for each message would take CPU from the work on a
small host (a sync round trip 117 -> 146 µs on two cores with a poke per
millisecond).  A task sent to an idle raylet then starts within a
millisecond instead of up to 50.  Ranks on other hosts are not poked: their
messages wait for the next poll, as before.

No MPI here; ``Transport`` pokes after it sends (``_comm/mpi.py``).
"""

from __future__ import annotations

import os
import time

# seconds: below the time a loop that every sender pokes keeps polling at least every
# millisecond after activity (``_backoff.POKED_IDLE_AFTER``), so a message sent less than
# this after a poke finds it polling; then it sleeps on its pipe (0.4 s here, with 0.5 s
# of polling, kept an idle raylet polling every millisecond through each sync benchmark:
# 3-7% of a core, taken from the driver and the leased worker, 77 -> 120 µs a round trip)
POKE_GAP = 0.02


def wake_path(folder: str, rank: int) -> str:
    return os.path.join(folder, f".wake-r{rank}")


class WakePipe:
    """This rank's named pipe: ``fd`` becomes readable when another rank pokes it."""

    def __init__(self, path: str):
        self.path = path
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        os.mkfifo(path, 0o600)
        self.fd = self._hold = -1
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
            # held open by the reader too: with no writer left a pipe reads end-of-file, and
            # a selector would then see it readable for ever
            self._hold = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            self.close()
            raise

    def drain(self) -> bool:
        """Empty the pipe; True if it had been poked."""
        poked = False
        try:
            while os.read(self.fd, 4096):
                poked = True
        except BlockingIOError:
            pass
        return poked

    def poke_self(self) -> None:
        """Wake this rank's own wait (another thread of it has work for it)."""
        try:
            os.write(self._hold, b"\0")
        except BlockingIOError:
            pass  # full: a wake-up is pending already

    def close(self) -> None:
        """Stop listening (again: nothing); before the session folder is removed."""
        if self.path is None:
            return
        for fd in (self.fd, self._hold):
            if fd >= 0:
                os.close(fd)
        self.fd = self._hold = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.path = None


class Pokers:
    """Pokes the pipes of other ranks of this host (rank -> path).

    Each poke opens the pipe, writes and closes (a few microseconds, at most every
    ``POKE_GAP``): opening fails (``ENXIO``) when nobody reads it, where a write into a
    descriptor kept from before, whose reader has ended since, would raise ``SIGPIPE``,
    which kills a driver whose script restored that signal's default action."""

    def __init__(self, paths: dict[int, str]):
        self.paths = paths
        self.last: dict[int, float] = {}

    def poke(self, rank: int, now: float | None = None) -> None:
        path = self.paths.get(rank)
        if path is None:
            return
        now = time.monotonic() if now is None else now
        if now - self.last.get(rank, -1.0) < POKE_GAP:
            return
        self.last[rank] = now
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # not listening (yet, or any more): it polls on its own
            return
        try:
            os.write(fd, b"\0")
        except OSError:  # full (a wake-up is pending already), or gone
            pass
        finally:
            os.close(fd)

