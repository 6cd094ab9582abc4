"""The polling loops' back-off: spin, then short sleeps, then idle sleeps."""

import time

from mpiray._backoff import Backoff


def test_spins_right_after_activity_then_sleeps_longer_and_longer():
    b = Backoff(spin=0.05, fast=3e-5, fast_window=0.1, busy_max=1e-3, idle_after=0.3, idle=0.02,
                deep_after=0.6, deep=0.05)
    b.reset()
    assert b.next() == 0.0  # spin: poll again at once
    time.sleep(0.06)
    assert b.next() == 3e-5
    time.sleep(0.05)
    delays = [b.next() for _ in range(12)]
    assert delays[0] > 3e-5 and delays == sorted(delays) and delays[-1] == 1e-3
    time.sleep(0.2)
    assert b.next() == 0.02
    time.sleep(0.3)
    assert b.next() == 0.05
    b.reset()
    assert b.next() == 0.0


def test_no_spin_by_default():
    b = Backoff()
    b.reset()
    assert b.next() == b.fast


def test_activity_seen_by_another_thread_shortens_the_waits():
    import time as _time

    from mpiray._backoff import Backoff

    b = Backoff(idle_after=0.01, idle=0.02)
    _time.sleep(0.03)
    assert b.next() == 0.02  # idle
    b.note(_time.monotonic() - 1.0)  # older than what it knew: nothing changes
    assert b.next() == 0.02
    b.note(_time.monotonic())  # the driver thread moved messages just now
    assert b.next() == b.fast


def test_a_poked_loop_sleeps_long_but_rechecks_soon_after_a_poke():
    from mpiray._backoff import DEEP_POKED, POKED_RECHECK, POKED_RECHECK_EVERY

    b = Backoff(poked=True, deep_after=0.0)
    b._last = time.monotonic() - 1.0  # long quiet
    assert b.next() == DEEP_POKED
    b.poked(time.monotonic())
    assert b.next() == POKED_RECHECK_EVERY  # the poke's message may show a little later
    b.poked(time.monotonic() - 2 * POKED_RECHECK)  # an older poke changes nothing
    assert b.next() == POKED_RECHECK_EVERY
    b._poked = time.monotonic() - 2 * POKED_RECHECK
    assert b.next() == DEEP_POKED
