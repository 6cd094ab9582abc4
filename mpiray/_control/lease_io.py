"""Rank 0's side of worker leases: the Unix socket leased workers connect to.

The lease table lives in the GCS (``lease.py``); this class only moves
messages: it accepts leased workers (each says its lease id first), reads
their replies, writes tasks to them, and signals them for cancels.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time

from .._protocol import messages as m
from .._protocol.channel import Channel
from .._watchdog import unix_socket

LEASE_IDLE = 0.01  # s a lease may sit idle before it goes back to its raylet


class LeaseIO:
    def __init__(self, session: str):
        self.address = m.lease_address(session)
        s = unix_socket(self.address, 16)  # None: no abstract sockets here, leasing stays off
        self.listener = socket.socket(fileno=s.detach()) if s is not None else None
        if self.listener is not None:
            self.listener.setblocking(False)
        self.fresh: list[Channel] = []  # accepted, lease id not read yet
        self.conns: dict[str, Channel] = {}  # lease id -> connection
        self.by_fd: dict[int, str] = {}
        self.poller = select.poll()  # over the fresh and the known connections
        self.last_used: dict[str, float] = {}

    def fds(self) -> list[int]:
        """What a sleeping loop must wake for: the lease connections (their workers answer
        on them) and, while there are any, the listener."""
        conns = [*self.fresh, *self.conns.values()]  # (atomic under the GIL)
        if not conns:
            return []
        return [fd for fd in (c.fd for c in conns) if fd >= 0] + [self.listener.fileno()]

    @property
    def enabled(self) -> bool:
        return self.listener is not None

    def poll(self, expecting: bool) -> list[tuple]:
        """What came in, without blocking: ("hello", lease_id), ("msg", lease_id, msg),
        ("eof", lease_id).  ``expecting``: a leased worker may be connecting."""
        events: list[tuple] = []
        if expecting and self.listener is not None:
            while True:
                try:
                    sock, _ = self.listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
                if int.from_bytes(creds[4:8], sys.byteorder) != os.getuid():
                    sock.close()  # the socket's name is visible to every user of the host
                    continue
                sock.setblocking(True)
                conn = Channel(sock.detach())
                self.fresh.append(conn)
                self.poller.register(conn.fileno(), select.POLLIN)
        if not self.fresh and not self.conns:
            return events
        ready = {fd for fd, _ in self.poller.poll(0)}
        known = ready & self.by_fd.keys()  # before the fresh ones join them
        for conn in [c for c in self.fresh if c.fileno() in ready]:
            self.fresh.remove(conn)
            try:
                lease_id = conn.recv()
            except (EOFError, OSError):
                self.poller.unregister(conn.fileno())
                conn.close()
                continue
            self.conns[lease_id] = conn
            self.by_fd[conn.fileno()] = lease_id
            self.last_used[lease_id] = time.monotonic()
            events.append(("hello", lease_id))
            while conn.inbox.messages:  # read along with the id: the socket shows nothing more
                events.append(("msg", lease_id, conn.inbox.messages.popleft()))
        for fd in known:
            lease_id = self.by_fd[fd]
            conn = self.conns[lease_id]
            try:
                while True:
                    events.append(("msg", lease_id, conn.recv()))
                    if not conn.poll(0):
                        break
            except (EOFError, OSError):
                self.close(lease_id)
                events.append(("eof", lease_id))
                continue
            self.last_used[lease_id] = time.monotonic()
        return events

    def send(self, lease_id: str, msg: tuple) -> None:
        kind = msg[0]
        if kind == m.W_CANCEL:  # (task_id, force, pid): the worker is on this host
            try:
                os.kill(msg[3], signal.SIGKILL if msg[2] else signal.SIGINT)
            except ProcessLookupError:
                pass
            return
        conn = self.conns.get(lease_id)
        if conn is None:
            return  # not connected any more: its raylet reports what happened
        try:
            conn.send(msg)
        except OSError:
            pass  # it died: its raylet reports it (LEASE_LOST)
        self.last_used[lease_id] = time.monotonic()
        if kind == m.W_UNLEASE:
            self.close(lease_id)

    def idle(self, lease_id: str, now: float) -> bool:
        return now - self.last_used.get(lease_id, now) > LEASE_IDLE

    def close(self, lease_id: str) -> None:
        conn = self.conns.pop(lease_id, None)
        self.last_used.pop(lease_id, None)
        if conn is not None:
            self.by_fd.pop(conn.fileno(), None)
            self.poller.unregister(conn.fileno())
            conn.close()

    def shutdown(self) -> None:
        for lease_id in list(self.conns):
            self.close(lease_id)
        for conn in self.fresh:
            conn.close()
        self.fresh.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
