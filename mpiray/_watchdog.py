"""Names the rank whose death ended an embedded cluster (run as a tiny separate process).

In embedded mode (a lone ``python app.py``) MPICH's process manager answers the
death of any spawned rank by SIGKILLing the whole job, the driver included, so
the driver cannot say what happened.  This process outlives it (its own
session, out of the process manager's reach), so it can.

    python -S -I _watchdog.py DRIVER_PID RANK:PID:HOST ...

It reads the driver's pipe on stdin: ``bye`` means a clean shutdown.  When a
rank dies and the driver then dies without ``bye``, it prints which rank died
first on its stderr (the driver's) and exits.  In every other case it exits
quietly as soon as the driver is gone.  Standard library only, no mpiray
import: it starts in a few milliseconds and takes a few MiB.
"""

from __future__ import annotations

import os
import select
import sys
import time

GRACE = 2.0  # s a rank's death may precede the driver's


def _exit_text(pid: int) -> str:
    """How a process that is still a zombie ended, from /proc (empty if unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        code = int(fields[49])  # exit_code, field 52 of stat (Linux 3.5+)
    except (OSError, IndexError, ValueError):
        return ""
    if code & 0x7F:
        sig = code & 0x7F
        names = {9: "SIGKILL (killed, or out of memory?)", 11: "SIGSEGV (crashed)", 6: "SIGABRT",
                 15: "SIGTERM", 7: "SIGBUS"}
        return f"killed by signal {sig} {names.get(sig, '')}".rstrip()
    return f"exited with code {code >> 8}"


class RankDeaths:
    """The ranks of this host, watched through pidfds: which died, in which order."""

    def __init__(self, ranks: list[tuple[int, int, str]]) -> None:
        self.ranks: dict[int, tuple[int, int, str]] = {}  # pidfd -> (rank, pid, host)
        for rank, pid, host in ranks:
            try:
                self.ranks[os.pidfd_open(pid)] = (rank, pid, host)
            except (OSError, AttributeError):  # gone already, or no pidfds on this system
                pass
        self.groups: list[list[tuple[int, int, str, str]]] = []  # deaths seen at one wake-up

    def register(self, poller) -> None:
        for fd in self.ranks:
            poller.register(fd, select.POLLIN)

    def seen(self, ready: set, poller) -> bool:
        """Record the ranks among ``ready`` (pidfds); True if any."""
        group = []
        for fd in sorted(ready & self.ranks.keys()):
            rank, pid, host = self.ranks.pop(fd)
            group.append((rank, pid, host, _exit_text(pid)))
            poller.unregister(fd)
            os.close(fd)
        if group:
            self.groups.append(sorted(group))
        return bool(group)

    def first(self) -> str:
        """Who died first, in words ('' if nobody)."""
        if not self.groups:
            return ""
        group = self.groups[0]
        who = " or ".join(f"rank {r} (host {h}, pid {p})" for r, p, h, _ in group)
        how = {x for *_, x in group if x}
        text = f"{who} died{': ' + how.pop() if len(how) == 1 else ''}"
        if len(group) > 1:
            text += " (they ended within the same instant: which one first is unknown)"
        later = sorted(r for g in self.groups[1:] for r, *_ in g)
        if later:
            text += f", then rank(s) {', '.join(map(str, later))}"
        return text

    def close(self) -> None:
        for fd in self.ranks:
            os.close(fd)
        self.ranks.clear()


def main(argv: list[str]) -> int:
    driver = int(argv[0])
    poller = select.poll()
    try:
        dfd = os.pidfd_open(driver)
    except (OSError, AttributeError):
        return 0
    deaths = RankDeaths([(int(r), int(p), h) for r, p, h in (a.split(":", 2) for a in argv[1:])])
    deaths.register(poller)
    poller.register(dfd, select.POLLIN)
    poller.register(0, select.POLLIN)
    said = b""
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
        ready = {fd for fd, _ in poller.poll(timeout)}
        if 0 in ready:
            chunk = os.read(0, 64)
            said += chunk
            if b"bye" in said:
                return 0
            if not chunk:
                poller.unregister(0)
        if deaths.seen(ready, poller) and deadline is None:
            deadline = time.monotonic() + GRACE
        if dfd in ready:
            if deaths.groups:
                os.write(2, (f"mpiray: {deaths.first()}; MPI's process manager then ended the whole "
                             f"job, driver (pid {driver}) included. Its tasks and objects cannot be "
                             "recovered.\n").encode())
            return 0
        if deadline is not None and time.monotonic() >= deadline:
            return 0  # the driver outlived the rank: it reports the death itself


def start_watchdog(nodes: list[dict], host: str):
    """Start the watchdog for the ranks of ``nodes`` on this host; returns its process or None."""
    import subprocess

    watched = [f"{n['rank']}:{n['pid']}:{n['host']}" for n in nodes if n["host"] == host]
    if not watched or not hasattr(os, "pidfd_open"):
        return None
    try:
        return subprocess.Popen([sys.executable, "-S", "-I", os.path.abspath(__file__), str(os.getpid()),
                                 *watched], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
    except OSError:
        return None


def quiet_watchdog(proc) -> None:
    """Tell the watchdog to leave without a word (the job ends cleanly, or the driver
    names the dead rank itself)."""
    try:
        proc.stdin.write(b"bye")
        proc.stdin.flush()
    except (AttributeError, OSError, ValueError):
        pass


def stop_watchdog(proc) -> None:
    """Quiet the watchdog and reap it."""
    if proc is None:
        return
    quiet_watchdog(proc)
    try:
        proc.stdin.close()
        proc.wait(timeout=5)
    except Exception:
        proc.kill()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
