"""The socket framing between a raylet, its workers and rank 0's lease: length, then pickle.

It is ``multiprocessing.connection.Connection``'s framing (so either end may be a plain
``Connection``), written with the plain C pickler: ``Connection.send`` pickles with
``ForkingPickler``, whose reducer table is a Python ``ChainMap`` consulted for every
object in the message, several microseconds per tiny task.  Nothing sent here needs its
extra reducers (no sockets or descriptors travel in messages).
"""

from __future__ import annotations

import pickle
import struct
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
