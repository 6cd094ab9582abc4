"""A raylet's cache of objects made on its node: bounded, oldest out first."""

from mpiray._node.local import LocalObjects
from mpiray._serialization import Blob


def _inline(n):
    return ("inline", Blob(b"x" * n, [], ()))


def test_oldest_go_first_by_count():
    lo = LocalObjects(max_items=3)
    for i in range(5):
        lo.put(f"o{i}", ("path", f"/p{i}"))
    assert [lo.get(f"o{i}") for i in range(5)] == [None, None, ("path", "/p2"), ("path", "/p3"),
                                                    ("path", "/p4")]


def test_oldest_go_first_by_inline_bytes():
    lo = LocalObjects(max_inline_bytes=250)
    for i in range(4):
        lo.put(f"o{i}", _inline(100))
    assert lo.get("o0") is None and lo.get("o1") is None and lo.get("o3") is not None
    assert lo.inline_bytes == 200
    lo.pop("o3")
    assert lo.inline_bytes == 100 and lo.get("o3") is None


def test_put_again_replaces_and_counts_once():
    lo = LocalObjects(max_items=2)
    lo.put("a", _inline(10))
    lo.put("a", _inline(30))
    assert lo.inline_bytes == 30 and len(lo.items) == 1


def test_a_full_cache_keeps_the_newest():
    lo = LocalObjects(max_items=1000)
    for i in range(5000):
        lo.put(f"o{i}", ("path", f"/p{i}"))
    assert len(lo.items) == 1000
    assert lo.get("o3999") is None and lo.get("o4000") == ("path", "/p4000")
