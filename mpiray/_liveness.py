"""Whether a process of this host still runs (a zombie does not)."""

from __future__ import annotations

import os


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs on this host.

    A killed process stays a zombie until its parent reaps it, and the
    launcher may not reap a killed rank at once: ``kill(pid, 0)`` succeeds on
    a zombie, so its state in ``/proc`` is checked too.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (not Linux): trust kill()
    return state not in (b"Z", b"X")
