"""The sockets between a raylet, its workers and rank 0's leases: length, then pickle.

The framing is ``multiprocessing.connection.Connection``'s (so either end may be a
plain ``Connection``), written with the plain C pickler (``Connection.send`` uses
``ForkingPickler``, whose reducer table is a Python ``ChainMap`` consulted for every
object in the message: several microseconds per tiny task) and read a burst at a
time (``Connection.recv`` makes two system calls per message).  Nothing sent here needs
``ForkingPickler``'s extra reducers: no sockets or descriptors travel in messages.
Not importing ``multiprocessing`` also spares each worker ~15 ms of start-up.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
from collections import deque

_HEADER = struct.Struct("!i")
_BIG = struct.Struct("!Q")


def frame(msg: tuple) -> list[bytes]:
    """``msg`` as the bytes ``Channel.send`` writes: header, then pickle."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    n = len(data)
    return [_HEADER.pack(n) if n <= 0x7FFFFFFF else _HEADER.pack(-1) + _BIG.pack(n), data]


class Channel:
    """One end of a stream socket of pickled messages (blocking)."""

    __slots__ = ("fd", "inbox")

    def __init__(self, fd: int):
        self.fd = fd  # -1 once closed
        self.inbox = Inbox(fd)  # messages read ahead of ``recv``

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    def fileno(self) -> int:
        if self.fd < 0:
            raise OSError("the channel is closed")
        return self.fd

    def send(self, msg: object) -> None:
        head, data = frame(msg)
        fd = self.fileno()
        sent = os.writev(fd, (head, data))  # one system call, no copy, for most messages
        rest = memoryview(head[sent:] + data) if sent < len(head) else memoryview(data)[sent - len(head):]
        while rest.nbytes:
            rest = rest[os.write(fd, rest):]

    def recv(self) -> object:
        """The next message, waiting for it; EOFError when the other end closed."""
        inbox = self.inbox
        while not inbox.messages:
            if not inbox.fill():
                raise EOFError("the other end closed the connection")
        return inbox.messages.popleft()

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the end of the stream) can be read within ``timeout`` s
        (None: wait as long as it takes)."""
        if self.inbox.messages:
            return True
        p = select.poll()  # (select() fails on descriptors >= 1024)
        p.register(self.fileno(), select.POLLIN)
        return bool(p.poll(None if timeout is None else max(0.0, timeout) * 1000))

    def close(self) -> None:
        fd = getattr(self, "fd", -1)  # (__del__ of one whose __init__ failed)
        if fd >= 0:
            self.fd = -1
            os.close(fd)


READ_SIZE = 1 << 18  # bytes asked for per read: a whole burst of small messages at once


class Inbox:
    """The messages of a ``Connection``-framed stream, read with one system call per wake-up.

    ``Connection.recv`` reads each message with two system calls (header, then body) and
    one per message; a raylet reading its workers' DONEs wants every message already
    there for one ``read``.  ``fill`` reads what is there and queues each whole message in
    ``messages``; a partial one waits for the next ``fill``.
    """

    __slots__ = ("fd", "buf", "chunk", "messages")

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.chunk = memoryview(bytearray(READ_SIZE))  # read into, reused: os.read(n) would
        self.messages: deque = deque()  # allocate (and for n this big, mmap) n bytes each time

    def fill(self) -> bool:
        """Read once (the descriptor is readable); False at the end of the stream.  Whole
        messages join ``messages`` only once all that was read is parsed: an exception in
        between (a signal's, say) leaves the buffer as it was, nothing queued twice."""
        n = os.readv(self.fd, (self.chunk,))
        if not n:
            return False
        buf = self.buf
        buf += self.chunk[:n]
        pos, end, got = 0, len(buf), []
        while end - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            head = 4
            if size == -1:
                if end - pos < 12:
                    break
                (size,) = _BIG.unpack_from(buf, pos + 4)
                head = 12
            if end - pos - head < size:
                break
            got.append(pickle.loads(buf[pos + head:pos + head + size]))
            pos += head + size
        if pos:
            del buf[:pos]
            self.messages.extend(got)
        return True
