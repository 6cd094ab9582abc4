"""The socket framing between a raylet, its workers and rank 0's lease: length, then pickle.

It is ``multiprocessing.connection.Connection``'s framing (so either end may be a plain
``Connection``), written with the plain C pickler: ``Connection.send`` pickles with
``ForkingPickler``, whose reducer table is a Python ``ChainMap`` consulted for every
object in the message, several microseconds per tiny task.  Nothing sent here needs its
extra reducers (no sockets or descriptors travel in messages).
"""

from __future__ import annotations

import os
import pickle
import struct
from collections import deque
from multiprocessing.connection import Connection

_HEADER = struct.Struct("!i")
_BIG = struct.Struct("!Q")


def frame(msg: tuple) -> list[bytes]:
    """``msg`` as the bytes ``Channel.send`` would write: header, then pickle."""
    data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    n = len(data)
    return [_HEADER.pack(n) if n <= 0x7FFFFFFF else _HEADER.pack(-1) + _BIG.pack(n), data]


class Channel(Connection):
    """A Connection whose ``send`` pickles with the plain pickler (``recv`` is unchanged)."""

    def send(self, obj: object) -> None:
        self.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


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
        """Read once (the descriptor is readable); False at the end of the stream."""
        n = os.readv(self.fd, (self.chunk,))
        if not n:
            return False
        buf = self.buf
        buf += self.chunk[:n]
        pos, end = 0, len(buf)
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
            self.messages.append(pickle.loads(buf[pos + head:pos + head + size]))
            pos += head + size
        if pos:
            del buf[:pos]
        return True
