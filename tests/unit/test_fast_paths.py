"""The per-task fast paths: plain pickling of plain values, cheap Blobs, the worker channel."""

import enum
import io
import os
import pickle
import socket
from multiprocessing.connection import Connection

import numpy as np
import pytest

from mpiray import _serialization
from mpiray._objref import ObjectRef, RefTracker
from mpiray._options import TaskOptions
from mpiray._protocol import channel
from mpiray._protocol.channel import Channel, Inbox, frame
from mpiray._serialization import Blob, dumps, loads
from mpiray._values import make_spec
from mpiray._node.worker_main import PrefixedStream


@pytest.fixture
def cloudpickle_calls(monkeypatch):
    calls = []
    real = _serialization.cloudpickle.dumps

    def counting(*args, **kwargs):
        calls.append(type(args[0]).__name__)
        return real(*args, **kwargs)

    monkeypatch.setattr(_serialization.cloudpickle, "dumps", counting)
    return calls


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize("value", [
    5, 2.5, 1j, "s", b"b", True, None,
    ((1, "a"), {"k": [None, 2.0]}),
    [1, [2, (3, b"x")]],
])
def test_plain_values_skip_cloudpickle_and_round_trip(value, cloudpickle_calls):
    blob = dumps(value)
    assert cloudpickle_calls == []
    assert blob.buffers == [] and blob.refs == ()
    assert loads(blob.data, blob.buffers, None) == value
    assert make_spec("t", "f", "fid", (value,), {}, TaskOptions(), 1 << 20, None).deps == ()


def test_refs_among_plain_values_skip_cloudpickle_and_are_recorded(cloudpickle_calls):
    a, b = ObjectRef("a.0"), ObjectRef("b.0")
    blob = dumps(([a, {"k": b}], {"x": a}))
    assert cloudpickle_calls == []
    assert blob.refs == ("a.0", "b.0")
    assert make_spec("t", "f", "fid", ([a],), {}, TaskOptions(), 1 << 20, None).deps == ("a.0",)
    tracker = RefTracker()
    out = loads(blob.data, blob.buffers, tracker)
    assert out[0][0] == a and out[0][1]["k"] == b and tracker.live() == 2


def _local_function():
    return lambda: 1


@pytest.mark.parametrize("value", [
    Color.RED,  # an int subclass: its class must travel
    np.arange(3),
    [[[[1]]]],  # deeper than the scan looks
    list(range(_serialization._SCAN_ITEMS)) + [None],  # longer than the scan looks
    {(1, 2): 3},  # a key that is not an atom
])
def test_other_values_go_to_cloudpickle(value, cloudpickle_calls):
    blob = dumps(value)
    assert len(cloudpickle_calls) == 1
    out = loads(blob.data, blob.buffers, None)
    if isinstance(value, np.ndarray):
        assert np.array_equal(out, value)
    else:
        assert out == value and type(out) is type(value)


def test_a_function_among_plain_values_goes_to_cloudpickle(cloudpickle_calls):
    blob = dumps((1, _local_function()))
    assert cloudpickle_calls == ["tuple"]
    assert loads(blob.data, blob.buffers, None)[1]() == 1


def test_blob_pickles_as_a_blob():
    blob = dumps({"a": 1})
    again = pickle.loads(pickle.dumps(blob, protocol=5))
    assert type(again) is Blob and again == blob
    assert blob.inline() is blob  # no buffers: nothing to copy
    assert blob.nbytes() == len(blob.data)


def test_make_spec_fast_and_general_paths():
    opts = TaskOptions()
    spec = make_spec("t1", "f", "fid", (1, "x"), {"k": 2.0}, opts, 1 << 20, None)
    assert spec.deps == () and spec.arg_refs == () and spec.args_ref is None
    assert loads(spec.args.data, [], None) == ((1, "x"), {"k": 2.0})
    assert spec.demand == {"CPU": 10_000} and spec.demand is opts.units

    assert make_spec("t2", "f", "fid", (), {}, opts, 1 << 20, None).args is None

    a, b = ObjectRef("a.0"), ObjectRef("b.0")
    spec = make_spec("t3", "f", "fid", (a, [b], a), {"k": b}, opts, 1 << 20, None)
    assert spec.deps == ("a.0", "b.0") and spec.arg_refs == ("a.0", "b.0")

    stored = []
    big = make_spec("t4", "f", "fid", (b"x" * 5000,), {}, opts, 1000,
                    lambda blob: stored.append(blob) or "p1")
    assert big.args is None and big.args_ref == "p1" and big.deps == ("p1",) and stored


def test_channel_speaks_connection_framing():
    left, right = socket.socketpair()
    ch, plain = Channel(left.detach()), Connection(right.detach())
    try:
        msg = ("run", {"x": 1}, [b"y" * 100_000])
        ch.send(msg)
        assert plain.recv() == msg
        plain.send(msg)
        assert ch.recv() == msg
        os.write(ch.fileno(), b"".join(frame(msg)) * 2)  # how the raylet writes a batch
        assert plain.recv() == msg and plain.recv() == msg
    finally:
        ch.close()
        plain.close()


def test_prefixed_stream_names_the_task_only_when_it_prints():
    raw = io.StringIO()
    stream = PrefixedStream(raw, {"rank": 3, "host": "h"})
    stream.set_task("f")
    stream.set_task(None)
    stream.set_task("g")
    stream.write("one\ntw")
    stream.set_task(None)  # the partial line is flushed with the task that wrote it
    stream.write("three\n")
    assert raw.getvalue().splitlines() == [
        f"(g pid={os.getpid()}, rank=3, host=h) one",
        f"(g pid={os.getpid()}, rank=3, host=h) tw",
        "three",
    ]


def test_inbox_reads_bursts_partial_and_big_messages(monkeypatch):
    left, right = socket.socketpair()
    ch = Channel(left.detach())
    try:
        small = [("done", i) for i in range(3)]
        os.write(ch.fileno(), b"".join(part for msg in small for part in frame(msg)))
        inbox = Inbox(right.fileno())
        assert inbox.fill() and list(inbox.messages) == small  # one read, three messages

        monkeypatch.setattr(channel, "READ_SIZE", 64)  # from now on a fill() sees <= 64 bytes
        inbox = Inbox(right.fileno())
        big = ("done", b"z" * 1000)
        ch.send(big)  # many reads; none of them yields half a message
        fills = 0
        while not inbox.messages:
            assert inbox.fill()
            fills += 1
        assert fills > 10 and list(inbox.messages) == [big] and not inbox.buf

        ch.send(("last",))
        ch.close()
        assert inbox.fill() and inbox.messages[-1] == ("last",)
        assert inbox.fill() is False  # end of stream
    finally:
        right.close()


def test_inbox_takes_the_long_header_of_huge_messages():
    left, right = socket.socketpair()
    try:
        payload = pickle.dumps(("x", 1), protocol=5)
        # the header Connection writes for messages over 2 GiB: -1, then 8 bytes of size
        left.sendall(channel._HEADER.pack(-1) + channel._BIG.pack(len(payload)) + payload)
        inbox = Inbox(right.fileno())
        assert inbox.fill() and list(inbox.messages) == [("x", 1)]
    finally:
        left.close()
        right.close()


def test_an_exception_while_parsing_queues_nothing_twice(monkeypatch):
    left, right = socket.socketpair()
    try:
        os.write(left.fileno(), b"".join(part for msg in [("one",), ("two",)] for part in frame(msg)))
        inbox = Inbox(right.fileno())
        calls = []
        real = pickle.loads

        def flaky(data):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt  # e.g. a cancel's signal in the middle
            return real(data)

        monkeypatch.setattr(channel.pickle, "loads", flaky)
        with pytest.raises(KeyboardInterrupt):
            inbox.fill()
        assert not inbox.messages and len(inbox.buf) > 0  # all of it still there
        monkeypatch.setattr(channel.pickle, "loads", real)
        os.write(left.fileno(), b"".join(frame(("three",))))
        assert inbox.fill() and list(inbox.messages) == [("one",), ("two",), ("three",)]
    finally:
        left.close()
        right.close()


def test_a_channel_closes_its_descriptor_when_dropped():
    left, right = socket.socketpair()
    fd = left.detach()
    ch = Channel(fd)
    del ch
    with pytest.raises(OSError):
        os.fstat(fd)
    right.close()
