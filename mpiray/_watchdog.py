"""Names the rank whose death ended the job (run as a tiny separate process).

MPICH's process manager (``mpiexec``, and the one behind an embedded cluster)
answers the death of any rank by SIGKILLing every other rank within
milliseconds, the driver included, so no mpiray rank can say what happened;
mpiexec's own report names the lowest rank that ended badly, often one it
killed itself.  This process outlives them (its own session, out of the
process manager's reach), so it can.

How it tells the first death: rank 0 listens on an abstract Unix socket
before the start-up handshake; every raylet of its host connects to it as soon
as it knows the session and never writes to it.  A raylet's connection reaches
end-of-file the moment its process lets go of its files, the same moment the
launcher notices the death, so the ranks the launcher kills afterwards close
theirs later.  (Process exit notifications, pidfds, come after the whole
process is torn down and were seen out of order.)  Runs only for jobs on one
host: it cannot watch ranks elsewhere, and would rather say nothing than blame
a rank that was killed second.

    python -S -I _watchdog.py DRIVER_PID LISTEN_FD RANK:PID:HOST ...

It reads the driver's pipe on stdin: ``bye`` means a clean shutdown (or that
the driver reported the death itself); end-of-file without it, or the driver's
pidfd, means the driver died.  When a rank dies while the driver lives, it
says at once which (on its stderr, the driver's): the launcher is about to
kill the driver and may stop forwarding output with it.  When a rank's end and
the driver's showed at the same wake-up it names the rank and says the order is
unknown; when only the driver died it says nothing.  Standard library only, no mpiray import: it starts in milliseconds and
takes a few MiB.
"""

from __future__ import annotations

import _socket  # not `socket`: its imports (enum, selectors) cost this process ~1.5 MiB
import os
import select
import sys
import time

GRACE = 2.0  # s a rank's death may precede the driver's


def address(session: str) -> str:
    return f"\0mpiray-{session}-watch"


def unix_socket(name: str, backlog: int | None = None) -> _socket.socket | None:
    """A Unix socket listening at (``backlog`` given) or connected to the abstract ``name``;
    None if that cannot be (no listener there, or no abstract sockets on this system)."""
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        if backlog is None:
            s.connect(name)
        else:
            s.bind(name)
            s.listen(backlog)
        return s
    except OSError:
        s.close()
        return None


def listen(session: str) -> _socket.socket | None:
    """Rank 0, before the handshake: the socket the raylets of this host connect to."""
    return unix_socket(address(session), 1024)


def connect(session: str) -> _socket.socket | None:
    """A raylet, after the handshake: hold a connection to the watchdog for life (None on
    another host, or with no watchdog: nothing to do)."""
    return unix_socket(address(session))


_SIGNALS = {2: "SIGINT", 6: "SIGABRT", 7: "SIGBUS", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM"}
_HINTS = {"SIGKILL": " (out of memory, or killed by a user or the batch system?)",
          "SIGSEGV": " (a crash in native code?)", "SIGBUS": " (/dev/shm full?)",
          "SIGABRT": " (an abort in native code?)"}


def exit_words(returncode: int, exit_hint: str = "") -> str:
    """How a process ended, from its return code as ``subprocess`` gives it (-N: signal N),
    with the likely cause; ``exit_hint`` follows a non-zero exit code."""
    if returncode < 0:
        name = _SIGNALS.get(-returncode, "")
        return f"killed by signal {-returncode} {name}{_HINTS.get(name, '')}".rstrip()
    return f"exited with code {returncode}" + (exit_hint if returncode else "")


def _exit_text(pid: int) -> str:
    """How a process ended, while it is still a zombie (empty if unknown)."""
    for _ in range(20):  # its connection closes just before it becomes a zombie
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rpartition(b")")[2].split()
        except OSError:
            return ""
        if fields and fields[0] in (b"Z", b"X"):
            break
        time.sleep(0.001)
    else:
        return ""
    try:
        code = int(fields[49])  # exit_code, field 52 of stat (Linux 3.5+): a wait status
    except (IndexError, ValueError):
        return ""
    return exit_words(-(code & 0x7F) if code & 0x7F else code >> 8)


class RankDeaths:
    """Connections of the ranks of this host: which closed, in which order."""

    def __init__(self, ranks: dict[int, tuple[int, str]]) -> None:
        self.known = ranks  # pid -> (rank, host)
        self.conns: dict[int, tuple[_socket.socket, int, int, str]] = {}  # fd -> (sock, rank, pid, host)
        self.groups: list[list[tuple[int, int, str]]] = []  # deaths seen at one wake-up
        self.how: set[str] = set()  # how the first ones ended

    def accept(self, listener: _socket.socket, poller) -> None:
        while True:
            try:
                fd, _ = listener._accept()
            except (BlockingIOError, InterruptedError):
                return
            conn = _socket.socket(fileno=fd)
            creds = conn.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)  # pid, uid, gid
            pid = int.from_bytes(creds[:4], sys.byteorder, signed=True)
            if pid not in self.known:
                conn.close()
                continue
            rank, host = self.known[pid]
            self.conns[conn.fileno()] = (conn, rank, pid, host)
            poller.register(conn.fileno(), select.POLLIN)

    def seen(self, ready: set, poller) -> bool:
        """Record the ranks whose connection is among ``ready``; True if any."""
        group = []
        for fd in sorted(ready & self.conns.keys()):
            conn, rank, pid, host = self.conns.pop(fd)
            poller.unregister(fd)
            conn.close()
            group.append((rank, pid, host))
        if group:
            if not self.groups:  # read before the launcher reaps them
                self.how = {_exit_text(p) for _, p, _ in group} - {""}
            self.groups.append(sorted(group))
        return bool(group)

    def first(self) -> str:
        """Who died first, in words ('' if nobody)."""
        if not self.groups:
            return ""
        group = self.groups[0]
        who = " or ".join(f"rank {r} (host {h}, pid {p})" for r, p, h in group)
        how = next(iter(self.how)) if len(self.how) == 1 else ""
        text = f"{who} died{': ' + how if how else ''}"
        if len(group) > 1:
            text += " (they ended within the same instant: which one first is unknown)"
        later = sorted(r for g in self.groups[1:] for r, *_ in g)
        if later:
            text += f", then rank(s) {', '.join(map(str, later))}"
        return text


def _say(line: str) -> None:
    try:
        os.write(2, (line + "\n").encode())
    except OSError:  # nobody reads the driver's stderr any more
        pass


def main(argv: list[str]) -> int:
    driver, listen_fd = int(argv[0]), int(argv[1])
    known = {int(p): (int(r), h) for r, p, h in (a.split(":", 2) for a in argv[2:])}
    try:
        dfd = os.pidfd_open(driver)
    except (OSError, AttributeError):
        return 0
    listener = _socket.socket(fileno=listen_fd)
    listener.setblocking(False)
    poller = select.poll()
    deaths = RankDeaths(known)
    for fd in (dfd, 0, listen_fd):
        poller.register(fd, select.POLLIN)
    deaths.accept(listener, poller)  # the raylets connected during the handshake
    said = b""
    deadline = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic()) * 1000
        ready = {fd for fd, _ in poller.poll(timeout)}
        if listen_fd in ready:
            deaths.accept(listener, poller)
        driver_gone = dfd in ready
        if 0 in ready:
            chunk = os.read(0, 64)
            said += chunk
            if b"bye" in said:
                return 0
            if not chunk:  # the driver let go of its files: it is dying
                poller.unregister(0)
                driver_gone = True
        if driver_gone:
            earlier = bool(deaths.groups)
            deaths.seen(ready, poller)  # ranks whose end showed at this same wake-up
            if not earlier and deaths.groups:  # no order to tell: one may have been killed for the other
                _say(f"mpiray: {deaths.first()}, at the same instant as the driver (pid {driver}): "
                     "one of them ended the job, the MPI launcher the rest. Its tasks and objects "
                     "cannot be recovered.")
            return 0
        if deaths.seen(ready, poller) and deadline is None:
            # a rank died while the driver lives: it died first.  Say so now: the launcher
            # kills the driver within milliseconds and may stop forwarding output with it
            # (waiting for the driver's end to say it lost the line 1 run in 8)
            _say(f"mpiray: {deaths.first()}. The job ends: a rank cannot be replaced.")
            deadline = time.monotonic() + GRACE
        if deadline is not None and time.monotonic() >= deadline:
            return 0  # the driver outlived the rank: it reports the death itself


def start_watchdog(listener: _socket.socket | None, nodes: list[dict], host: str):
    """Start the watchdog for a job whose ranks all run on this host; its process, or None.
    The listening socket passes to it (rank 0 closes its own copy)."""
    import subprocess

    if listener is None:
        return None
    try:
        if not nodes or any(n["host"] != host for n in nodes) or not hasattr(os, "pidfd_open"):
            return None
        fd = listener.fileno()
        return subprocess.Popen([sys.executable, "-S", "-I", os.path.abspath(__file__), str(os.getpid()),
                                 str(fd), *(f"{n['rank']}:{n['pid']}:{n['host']}" for n in nodes)],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, pass_fds=(fd,),
                                start_new_session=True)
    except OSError:
        return None
    finally:
        listener.close()


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
