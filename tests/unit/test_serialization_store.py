import threading

import numpy as np
import pytest

from mpiray._objref import ObjectRef, RefTracker
from mpiray._serialization import dumps, loads
from mpiray._store.shm import Store, check_shared_memory, map_file, parse, register_spill_root
from mpiray._values import arg_dependencies, resolve_arguments


def test_numpy_goes_out_of_band_and_back():
    a = np.arange(1_000_000)
    blob = dumps({"a": a})
    assert len(blob.buffers) == 1 and len(blob.data) < 1000
    assert np.array_equal(loads(blob.data, blob.buffers, None)["a"], a)


def test_refs_inside_values_are_recorded():
    r1, r2 = ObjectRef("x.0"), ObjectRef("y.0")
    blob = dumps([r1, {"k": (r2,)}])
    assert set(blob.refs) == {"x.0", "y.0"}
    tracker = RefTracker()
    out = loads(blob.data, blob.buffers, tracker)
    assert out[0] == r1 and tracker.live() == 2
    del out
    assert tracker.live() == 0
    assert tracker.drain() == []  # acquired and released before anyone was told: nets to nothing


def test_tracker_transitions():
    t = RefTracker()
    a = ObjectRef("a", t)
    b = ObjectRef("a", t)
    assert t.drain() == [("a", 1)]
    del a
    assert t.drain() == []
    del b
    assert t.drain() == [("a", -1)]


def test_unpicklable_is_a_type_error():
    with pytest.raises(TypeError) as info:
        dumps(threading.Lock())
    assert "lock" in str(info.value).lower()


def test_store_roundtrip_zero_copy(tmp_path):
    s = Store("unit", 1, str(tmp_path / "shm"), str(tmp_path / "disk"))
    s.create()
    a = np.arange(100_000, dtype=np.float32)
    size = s.write("o1", dumps(a))
    assert s.used == size and s.exists("o1")
    b = s.read("o1", None)
    assert np.array_equal(a, b) and not b.flags.writeable
    s.delete("o1")
    assert not s.exists("o1") and np.array_equal(b, a)  # a mapped object outlives its file
    s.destroy()


def test_store_spills_oldest_and_reads_back(tmp_path):
    s = Store("unit", 1, str(tmp_path / "shm"), str(tmp_path / "disk"), capacity=3 << 20)
    s.create()
    register_spill_root(s)
    arrays = [np.full(1 << 18, i, dtype=np.float64) for i in range(6)]  # 2 MiB each
    for i, a in enumerate(arrays):
        s.write(f"o{i}", dumps(a))
        assert s.used <= 3 << 20
    assert set(s.spilled) >= {"o0", "o1"} and "o5" in s.sizes
    assert s.locate("o0").startswith(str(tmp_path / "disk"))
    for i, a in enumerate(arrays):  # every object comes back, spilled or not
        assert np.array_equal(s.read(f"o{i}", None), a)
    # a reader holding only the shared-memory path finds the spilled twin
    data, bufs = parse(map_file(s.path("o0")))
    assert np.array_equal(loads(data, bufs, None), arrays[0])
    s.delete("o0")
    assert s.locate("o0") is None
    s.destroy()


def test_store_full_errors_name_sizes(tmp_path):
    from mpiray.exceptions import ObjectStoreFullError
    s = Store("unit", 1, str(tmp_path / "shm"), "/proc/no-such-disk", capacity=1 << 20)
    s.create()
    with pytest.raises(ObjectStoreFullError) as info:
        s.write("big", dumps(np.zeros(1 << 19)))  # 4 MiB: over capacity, spill dir unusable
    assert "MiB" in str(info.value) and "MPIRAY_SPILL_DIR" in str(info.value)
    with pytest.raises(ObjectStoreFullError) as info:
        check_shared_memory("/proc", 1 << 30)
    assert "/dev/shm" in str(info.value) and "MPIRAY_STORE_ROOT" in str(info.value)


def test_nested_argument_resolution():
    r = ObjectRef("a.0")
    args, kwargs = ([r, {"k": r}], (r,)), {"x": r}
    assert arg_dependencies(args, kwargs, nested=True) == ("a.0",)
    assert arg_dependencies(args, kwargs, nested=False) == ("a.0",)  # kwargs top level
    a2, k2 = resolve_arguments(args, kwargs, {"a.0": 7}, nested=True)
    assert a2 == ([7, {"k": 7}], (7,)) and k2 == {"x": 7}
    a3, _ = resolve_arguments(args, kwargs, {"a.0": 7}, nested=False)
    assert a3[0][0] is r


def test_sweep_removes_only_dead_sessions(tmp_path):
    import os
    import subprocess
    import sys

    from mpiray._store.shm import sweep_stale

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for name, pid in (("mpiray-dead", dead.pid), ("mpiray-live", os.getpid())):
        d = tmp_path / name / "r0"
        d.mkdir(parents=True)
        (tmp_path / name / ".pid-r0").write_text(str(pid))
        os.utime(tmp_path / name, (0, 0))  # old enough
    young = tmp_path / "mpiray-young"
    young.mkdir()
    (young / ".pid-r0").write_text(str(dead.pid))
    other = tmp_path / "not-ours"
    other.mkdir()
    assert sweep_stale(str(tmp_path)) == 1
    assert not (tmp_path / "mpiray-dead").exists()
    assert (tmp_path / "mpiray-live").exists() and young.exists() and other.exists()
