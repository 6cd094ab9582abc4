"""Rank 0's service thread: MPI in, GCS events, MPI out.

::

    driver thread                       service thread (this module)
    ─────────────                       ────────────────────────────
    submit/put/get ──(lock)──> GCS <──(lock)── handle(batch) <── Transport.poll()
          │                     │
          └── try_step()/wake() └── gcs.out ──> Transport.send/flush ──> raylets
    get() waits on ``cond``; the service notifies it when objects change.

A submitting or waiting driver thread runs ``step()`` itself when no other
thread is in it (``try_step``), so a round trip needs no thread hand-off on
rank 0; the service thread keeps things moving while the driver computes.

The loop never blocks in MPI: it polls with a ``Backoff`` that only yields
right after activity and sleeps longer the longer nothing happens, on an
Event the driver sets, so an idle cluster costs ~0% CPU and a busy one little
latency.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from typing import Any

from .._backoff import Backoff, tighten_timer_slack
from .._liveness import process_alive
from .._protocol import messages as m
from .._store.shm import MAPS
from .._store.transfer import Transfers
from .deliveries import drop_if_unwanted
from .gcs import GCS

LIVENESS_PERIOD = 1.0  # s between checks of the other ranks (and heartbeats to them)

_TRANSFER = (m.PULL, m.DATA, m.CHUNK, m.SLOT_FREE, m.DELIVER, m.DELIVERED)
_SIGINT = {signal.SIGINT}



class Service:
    def __init__(self, gcs: GCS, transport: Any, store: Any, tracker: Any):
        self.gcs = gcs
        self.transport = transport
        self.store = store
        self.tracker = tracker
        self.cond = threading.Condition(threading.Lock())
        self.wake_event = threading.Event()
        self.wake_pipe: Any = None  # _comm/wake.WakePipe: raylets of this host poke it
        self._poll: Any = None  # select.poll over it (select() fails on descriptors >= 1024)
        self.sleeping = False
        self.poked_at = 0.0  # when a rank of this host last poked the pipe
        self.active_at = 0.0  # when a step (of either thread) last moved something
        self.io_lock = threading.Lock()  # one thread at a time moves messages
        self.stop = False
        self.byes: set[int] = set()
        self.dead: dict[int, str] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="mpiray-service", daemon=True)
        self.last_seen: dict[int, float] = {}
        self._last_check = time.monotonic()
        self._last_beat = 0.0
        self.xfer = Transfers(transport, store, self._pulled, self._pull_lost, on_delivered=self._delivered)
        self.arena: Any = None  # rank 0's delivery arena, when it has one (driver.py)
        self.deliveries: dict[tuple, Any] = {}  # (oid, owner rank) -> deliveries._Delivery
        if getattr(transport, "stage", None) is not None:
            self.xfer.start()
        self.peers: dict[int, tuple] = {}  # rank -> (host, pid) of raylets, for liveness checks
        self.same_host: set[int] = set()
        self.xfer.near = self.same_host  # (filled by the driver at start-up)
        self.silence_limit = 30.0
        self.driver_polling = False
        self.driver_grace = 0.0  # until then the service thread stays paused (driver.py)
        self.leases: Any = None  # LeaseIO when worker leases are on (lease.py)
        self.on_fatal = lambda: None  # called before a fatal message (quiets the driver's watchdog)

    def start(self) -> None:
        self.thread.start()

    def wake(self) -> None:
        self.wake_event.set()
        if self.sleeping:  # (set before it checks the event: one of the two sees the other)
            self.wake_pipe.poke_self()

    def _sleep(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the driver's ``wake()`` or, for waits of a millisecond
        or more (``poll`` counts whole ones; shorter waits end soon anyway), a poke from a
        rank of this host."""
        pipe = self.wake_pipe
        if pipe is None or seconds < 1e-3:
            self.wake_event.wait(seconds)
            return
        lease_fds = self.leases.fds() if self.leases is not None else ()
        if lease_fds:  # a leased worker answers on its socket, not through the pipe
            poller = select.poll()
            for fd in (pipe.fd, *lease_fds):
                poller.register(fd, select.POLLIN)
        else:
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(pipe.fd, select.POLLIN)
            poller = self._poll
        self.sleeping = True
        try:
            if not self.wake_event.is_set() and poller.poll(seconds * 1e3):
                if pipe.drain():
                    self.poked_at = time.monotonic()
        finally:
            self.sleeping = False

    # -- loop --------------------------------------------------------------
    def _run(self) -> None:
        tighten_timer_slack()
        poked = self.wake_pipe is not None and len(self.same_host) == self.transport.size - 1
        backoff = Backoff(poked=poked)  # (every raylet pokes it)
        try:
            while not self.stop:
                if self.driver_polling or time.monotonic() < self.driver_grace:
                    self.wake_event.wait(0.002)  # the driver thread steps itself meanwhile
                    self.wake_event.clear()
                    backoff.reset()  # and the messages it moved were activity
                    continue
                if self.step():
                    backoff.reset()
                    continue
                backoff.note(self.active_at)  # (the driver thread's steps count too)
                backoff.poked(self.poked_at)
                self._sleep(backoff.next())  # poked or not, the next step says if it was activity
                self.wake_event.clear()
        except BaseException as exc:  # surfaced to the driver by get()/shutdown()
            self.error = exc
            with self.cond:
                self.cond.notify_all()
            raise

    def try_step(self) -> bool | None:
        """``step()`` unless another thread is in it (then None): lets the driver thread
        send its own submissions and receive its own results without a thread hand-off."""
        return self.step(blocking=False)

    def step(self, blocking: bool = True) -> bool | None:
        """One round of IO: receive, run the GCS, send.  Any thread may call it; None when
        not ``blocking`` and another thread is in it."""
        if not self.io_lock.acquire(blocking=blocking):
            return None
        # a Ctrl-C in the middle of a step would lose what it read or was to send: it waits
        # until the step is over (signals reach only the main thread)
        mask = (signal.pthread_sigmask(signal.SIG_BLOCK, _SIGINT)
                if threading.current_thread() is threading.main_thread() else None)
        try:
            moved = self._step()
            if moved:
                self.active_at = time.monotonic()
            return moved
        finally:
            self.io_lock.release()
            if mask is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def _step(self) -> bool:
        batches = self.transport.poll()
        now = time.monotonic()
        for src, _ in batches:
            self.last_seen[src] = now
        if now - self._last_check > LIVENESS_PERIOD:
            self._last_check = now
            self._check_ranks(now)
        data = []
        with self.cond:
            changes = self.tracker.drain()
            if changes:
                self.gcs.refs(changes)
            # replies of leased workers first: a W_DONE written before its worker died must
            # be seen before the raylet's LEASE_LOST (else the finished task runs again)
            leased = self._leases(now) if self.gcs.leases or (self.leases and self.leases.conns) else False
            for src, batch in batches:
                for msg in batch:
                    if msg[0] in _TRANSFER:
                        data.append((src, msg))
                    else:
                        self._handle(src, msg)
            out, self.gcs.out = self.gcs.out, []
            if self.gcs.changed:
                self.gcs.changed = False
                self.cond.notify_all()
        for src, msg in data:  # bulk bytes move outside the lock
            getattr(self.xfer, "on_" + msg[0])(src, *msg[1:])
        if self.xfer.puts:  # deliveries of the driver's objects into raylets' arenas
            self.xfer.pump_puts()
        for dest, msg in out:
            if dest == 0:
                self._local(msg)
            elif dest.__class__ is tuple:  # ("lease", lease_id)
                self.leases.send(dest[1], msg)
            else:
                self.transport.send(dest, msg)
        self.transport.flush()
        # heartbeats alone are not activity: they must not keep an idle loop awake
        chatter = any(msg[0] != m.HEARTBEAT for _, batch in batches for msg in batch)
        return bool(chatter or out or changes or data or leased or self.xfer.busy())

    def _leases(self, now: float) -> bool:
        """Messages from leased workers; idle leases go back.  Holds ``cond``."""
        gcs, io = self.gcs, self.leases
        events = io.poll(gcs.lease_expected())
        for ev in events:
            if ev[0] == "hello":
                if not gcs.lease_connected(ev[1]):
                    io.close(ev[1])  # returned or lost meanwhile: the worker goes back
            elif ev[0] == "msg":
                lease, msg = gcs.leases.get(ev[1]), ev[2]
                if lease is not None and msg[0] == m.W_DONE:
                    gcs.task_done(lease.rank, msg[1], msg[2], msg[3])
            else:  # "eof": the worker died; no task goes there; its raylet reports the rest
                gcs.lease_broken(ev[1])
        for lease_id in [k for k, x in gcs.leases.items() if x.state == "ready" and io.idle(k, now)]:
            gcs.return_lease(lease_id)
        return bool(events)

    def _handle(self, src: int, msg: tuple) -> None:
        kind = msg[0]
        gcs = self.gcs
        if kind == m.DONE:
            gcs.task_done(src, msg[1], msg[2], msg[3], msg[4] if len(msg) > 4 else None)
        elif kind == m.SUBMIT:
            try:
                gcs.submit(msg[1], msg[2], src, placed=msg[3] if len(msg) > 3 else None)
            except Exception as exc:
                from .._protocol.messages import Failure

                gcs.fail_submit(msg[1], Failure("system", None, type(exc).__name__, str(exc), "",
                                                msg[1].name, f"rank {src}"))
        elif kind == m.REFS:
            gcs.refs(msg[1])
        elif kind == m.PUT:
            gcs.put(msg[1], msg[2], msg[3], src)
        elif kind == m.SUBSCRIBE:
            gcs.subscribe(src, msg[1])
        elif kind == m.BLOCKED:
            gcs.blocked(src, msg[1])
        elif kind == m.UNBLOCKED:
            gcs.unblocked(src, msg[1])
        elif kind == m.COPIED:
            gcs.copied(msg[1], src)
        elif kind == m.LOST:  # (ids, the rank whose copy is gone)
            for oid in msg[1]:
                gcs.object_lost(oid, msg[2])
        elif kind == m.LEASED:
            gcs.lease_granted(src, msg[1], msg[2])
        elif kind == m.LEASE_LOST:
            gcs.lease_lost(src, msg[1], msg[2], msg[3])
        elif kind == m.ACTOR_DIED:
            gcs.actor_died(src, msg[1], msg[2], msg[3], msg[4])
        elif kind == m.KILL:
            gcs.kill_actor(msg[1], msg[2])
        elif kind == m.LOOKUP:
            gcs.out.append((src, (m.FOUND, msg[1], gcs.lookup_actor(msg[2]))))
        elif kind == m.HEARTBEAT:
            if len(msg) > 1 and src in gcs.nodes:  # the raylet's recent pulls, for nodes()
                gcs.nodes[src]["recent_pulls"] = msg[1]["pulls"]
                gcs.nodes[src]["chained"] = msg[1].get("chained", 0)
        elif kind == m.BYE:
            self.byes.add(src)
        elif kind == "fatal":
            self.dead[src] = msg[1]
            self.error = RuntimeError(msg[1])
        else:
            raise RuntimeError(f"rank 0 got an unknown message {kind!r} from rank {src}")

    # -- liveness ----------------------------------------------------------
    def _check_ranks(self, now: float) -> None:
        """A rank that died or fell silent ends the job: no rank may hang waiting for it."""
        if self.stop:
            return
        MAPS.prune()  # this process's cached mappings of files freed elsewhere go
        beat = now - self._last_beat >= 1.0
        if beat:
            self._last_beat = now
        for rank, (host, pid) in self.peers.items():
            if rank in self.byes:
                continue
            why = None
            if rank in self.same_host and not process_alive(pid):
                why = "its process is gone (killed, or crashed?)"
            seen = self.last_seen.setdefault(rank, now)
            if why is None and now - seen > self.silence_limit:
                why = f"it sent nothing for {now - seen:.0f} s (node failure or hang?)"
            if why is not None:
                self.fatal(f"mpiray: rank {rank} (host {host}, pid {pid}) died: {why}. "
                           "Ending the job: its tasks and objects cannot be recovered.")
            if beat:
                self.transport.send(rank, (m.HEARTBEAT,))  # raylets end themselves if rank 0 falls silent

    def fatal(self, message: str) -> None:
        try:
            os.write(2, (message + "\n").encode())  # first: the launcher may kill us any moment
            self.on_fatal()  # (then the watchdog need not say it too)
            if self.store is not None:  # this host's share of the job's objects
                import shutil

                shutil.rmtree(self.store.root, ignore_errors=True)
            time.sleep(0.2)  # let the launcher forward the message before the abort tears down
        finally:
            self.transport.abort(1)

    def _local(self, msg: tuple) -> None:
        if msg[0] == m.FREE:
            for oid in msg[1]:
                self.store.delete(oid)

    def _pulled(self, oid: str, src: int) -> None:
        with self.cond:
            self.gcs.copied(oid, 0)
            self.cond.notify_all()

    def _delivered(self, oid: str, src: int, nbytes: int) -> None:
        if nbytes >= 0:
            self.transport.sync_arena()  # the Put's bytes are visible to this process's loads
        with self.cond:
            d = self.deliveries.get((oid, src))
            if d is None:
                return
            d.nbytes = nbytes
            drop_if_unwanted(self.deliveries, self.arena, d)
            self.cond.notify_all()

    def _pull_lost(self, oid: str, src: int) -> None:
        with self.cond:
            self.gcs.object_lost(oid, src)
            self.cond.notify_all()

    # -- shutdown ----------------------------------------------------------
    def shutdown(self, ranks: list[int], timeout: float) -> list[int]:
        """Tell every raylet to stop; return the ranks that did not answer in time."""
        with self.cond:
            self.gcs.out.extend((r, (m.SHUTDOWN,)) for r in ranks)
        self.wake()
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.byes.issuperset(ranks):
            if not self.thread.is_alive():
                try:
                    self.step()
                except Exception:
                    break
            time.sleep(0.001)
        self.stop = True
        self.wake()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=5)
        self.transport.drain_sends()
        if self.leases is not None:
            self.leases.shutdown()
        if self.wake_pipe is not None and not self.thread.is_alive():
            self.wake_pipe.close()
        return [r for r in ranks if r not in self.byes]
