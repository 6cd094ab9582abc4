"""MPI transport: the one module that imports mpi4py.

::

    rank 0 (driver + GCS)                      rank r (raylet)
    Transport.send(r, msg) ─┐                  ┌─ Transport.poll() -> [(0, [msg, ...])]
    Transport.flush() ──────┴─ one isend per ──┘  (improbe + mrecv, non-blocking)
                               destination per
                               flush: a batch
    Transport.get_from: bulk bytes, one-sided Get from a peer's staging window
                        (see _store/transfer.py for the pull protocol)

Control messages are batched: ``send`` only queues; ``flush`` sends each
destination's queue as one pickled list.  Nothing here blocks except the
start-up collectives (and closing the staging windows).  MPI is
initialised on first use of this module's functions, never at import.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from collections import defaultdict
from typing import Any

from .._protocol.messages import HEARTBEAT

CTRL_TAG = 11


def _mpi():
    from mpi4py import MPI  # noqa: PLC0415 - MPI starts here, not at import of mpiray

    return MPI


def world_size_hint(environ: Any = os.environ) -> int:
    """World size from the launcher's environment, without starting MPI."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        if environ.get(var, "").isdigit():
            return int(environ[var])
    if environ.get("SLURM_STEP_NUM_TASKS", "").isdigit() and "SLURM_STEP_ID" in environ:
        return int(environ["SLURM_STEP_NUM_TASKS"])
    return 1


def find_mpiexec() -> str | None:
    here = os.path.dirname(sys.executable)
    return shutil.which("mpiexec", path=os.pathsep.join([here, os.environ.get("PATH", "")]))


class Transport:
    """Batched, non-blocking control messages and bulk data over one intracommunicator."""

    def __init__(self, comm: Any, inter: Any = None):
        self.comm = comm
        self._inter = inter  # intercommunicator to the parent/children when spawned
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.host = socket.gethostname()
        self._out: dict[int, list] = defaultdict(list)
        self._reqs: list = []
        self._win: Any = None
        self.stage: Any = None
        self.nslots = self.slot_size = 0
        self._arena_win: Any = None
        self.arena: Any = None
        self.pokers: Any = None  # wake.Pokers: ranks of this host woken when sent to

    # -- start-up (collective) ---------------------------------------------
    def bcast(self, obj: Any) -> Any:
        return self.comm.bcast(obj, root=0)

    def gather(self, obj: Any) -> list | None:
        return self.comm.gather(obj, root=0)

    def allgather(self, obj: Any) -> list:
        return self.comm.allgather(obj)

    # -- control messages --------------------------------------------------
    def send(self, dest: int, msg: Any) -> None:
        self._out[dest].append(msg)

    def flush(self) -> None:
        if self._out:
            out, self._out = self._out, defaultdict(list)
            for dest, msgs in out.items():
                self._reqs.append(self.comm.isend(msgs, dest=dest, tag=CTRL_TAG))
                if self.pokers is not None and (len(msgs) > 1 or msgs[0][0] != HEARTBEAT):
                    self.pokers.poke(dest)  # (a heartbeat can wait for the next poll)
        if self._reqs:
            self._reqs = [r for r in self._reqs if not r.Test()]

    def poll(self) -> list[tuple[int, list]]:
        """Every control batch that has arrived, as (source, [msg, ...]); never blocks."""
        MPI = _mpi()
        got = []
        status = MPI.Status()
        again = True
        while True:
            m = self.comm.improbe(source=MPI.ANY_SOURCE, tag=CTRL_TAG, status=status)
            if m is None:
                if again:  # MPICH matches before it makes progress: a message that arrived
                    again = False  # while we slept shows only at the next probe (a loop that
                    continue       # sleeps 1 ms between polls saw messages 1.7 ms late, not 0.6)
                return got
            got.append((status.Get_source(), m.recv()))

    # -- bulk data: one staging window per rank, made once --------------------
    def open_stage(self, nbytes: int, nslots: int) -> None:
        """Collective: every rank allocates its staging window and locks all targets once."""
        MPI = _mpi()
        self.nslots = nslots
        self.slot_size = nbytes // nslots
        self._win = MPI.Win.Allocate(self.slot_size * nslots, comm=self.comm)
        self._win.Lock_all()
        self.stage = self._win.tomemory().cast("B")

    def get_from(self, rank: int, offset: int, dest: Any, alive: Any = None) -> None:
        """Copy ``len(dest)`` bytes at ``offset`` of ``rank``'s staging window into ``dest``.

        Waits without blocking inside MPI, calling ``alive()`` every second so a
        process whose peer or driver vanished can give up instead of hanging.  For the
        first 50 ms it tests without sleeping: over a network module (UCX, OFI) each test
        drives the transfer on, and sleeping between tests left a 100 MiB pull at 1.2 GB/s
        against 4.7 when spinning.  (On one host's shared memory the Get is done at once.)
        """

        MPI = _mpi()
        self._wait(self._win.Rget([dest, MPI.BYTE], rank, (offset, len(dest), MPI.BYTE)), alive)

    @staticmethod
    def _wait(req: Any, alive: Any) -> None:
        import time

        delay, last = 0.0, time.monotonic()
        spin_end = last + 0.05
        while not req.Test():
            if time.monotonic() < spin_end:
                continue
            time.sleep(delay)
            delay = min(1e-3, delay * 2 or 1e-6)
            if alive is not None and time.monotonic() - last > 1.0:
                last = time.monotonic()
                alive()

    # -- arena windows (rank 0: _store/arena.py; raylets: _store/regions.py) --
    def open_arena(self, nbytes: int) -> None:
        """Collective: each rank allocates ``nbytes`` of its own (rank 0 for the driver's
        deliveries, raylets for their region copies, 0 for none) that every rank may Put
        into; ``self.arena`` is this rank's memory (None when it allocated nothing)."""
        MPI = _mpi()
        self._arena_win = MPI.Win.Allocate(nbytes, comm=self.comm)
        self._arena_win.Lock_all()
        self.arena = self._arena_win.tomemory() if nbytes else None

    def put_to(self, rank: int, offset: int, src: Any, alive: Any = None) -> None:
        """Copy ``src`` into ``rank``'s arena at ``offset``; complete at the target on return."""
        MPI = _mpi()
        req = self._arena_win.Rput([src, MPI.BYTE], rank, (offset, len(src), MPI.BYTE))
        self._wait(req, alive)
        self._arena_win.Flush(rank)

    def sync_arena(self) -> None:
        """Make what others Put into this rank's arena visible to its own loads."""
        if self._arena_win is not None:
            self._arena_win.Sync()

    def close_arena(self) -> None:
        """Collective: free the arena window (rank 0 first saves what values still view:
        ``Arena.close``)."""
        win, self._arena_win = self._arena_win, None
        if win is not None:
            self.arena = None
            win.Unlock_all()
            win.Free()

    def close_stage(self) -> None:
        """Collective: free the staging windows."""
        win, self._win = self._win, None
        if win is not None:
            self.stage = None
            win.Unlock_all()
            win.Free()

    # -- teardown ----------------------------------------------------------
    def drain_sends(self, timeout: float = 5.0) -> None:
        import time

        self.flush()
        end = time.monotonic() + timeout
        while self._reqs and time.monotonic() < end:
            time.sleep(0.0005)
            self.flush()

    def enable_wake(self, folder: str, hosts: list[str]) -> Any:
        """Listen for pokes (``_comm/wake.py``) in ``folder``, the host's session folder,
        and poke the other ranks of this host after each send to them; returns this rank's
        ``WakePipe``, for its loop to wait on (None where the folder cannot hold a named
        pipe: the loop then polls on its own, as ranks of other hosts do)."""
        from .wake import Pokers, WakePipe, wake_path

        try:
            pipe = WakePipe(wake_path(folder, self.rank))
        except OSError:
            pipe = None
        self.pokers = Pokers({r: wake_path(folder, r) for r in range(self.size)
                              if r != self.rank and hosts[r] == hosts[self.rank]})
        return pipe

    def close(self) -> None:
        """Disconnect from spawned peers (collective over the merged world)."""
        if self._inter is not None:
            try:
                self.comm.Disconnect()
                self._inter.Disconnect()
            except Exception:
                pass
            self._inter = None

    def abort(self, code: int = 1) -> None:
        self.comm.Abort(code)


def _slurm_pmi2_workaround(environ: Any = os.environ) -> bool:
    """Under ``srun --mpi=pmi2`` with the ``mpich`` wheel, start MPICH with its OFI network
    module instead of UCX (unless the user chose one).  Returns whether it did.

    Slurm's pmi2 plugin (22.05 at least) answers PMI-1 clients, as MPICH is one, by
    reading each request with a single 1024-byte ``read``; MPICH sends its UCX address
    (several KiB) in segments whose lines can pass 1024 bytes, and then ``MPI_Init``
    fails (``mpi/pmi2: value not properly terminated in client request``) in every
    job whose address happens to encode that long.  OFI's address is a few dozen bytes.
    Hydra (``mpiexec``), even inside an allocation, is told apart by ``MPI_LOCALNRANKS``.
    """
    if ("MPIR_CVAR_CH4_NETMOD" in environ or environ.get("SLURM_MPI_TYPE") != "pmi2"
            or "PMI_FD" not in environ or "MPI_LOCALNRANKS" in environ):
        return False
    from importlib import metadata

    try:
        metadata.distribution("mpich")  # built with both network modules (ch4:ucx,ofi)
    except metadata.PackageNotFoundError:
        return False
    environ["MPIR_CVAR_CH4_NETMOD"] = "ofi"
    return True


def single_host_hint(environ: Any = os.environ) -> bool:
    """Whether the launcher's environment says that every rank runs on this host (a lone
    process, which spawns its ranks here, included), without starting MPI."""
    size = world_size_hint(environ)
    if size == 1:
        return True
    for local, world in (("MPI_LOCALNRANKS", "PMI_SIZE"),
                         ("OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_SIZE")):
        if local in environ:  # Hydra or Open MPI said: believe it (not an enclosing srun step's)
            return environ[local] == environ.get(world)
    return (environ.get("SLURM_STEP_NUM_NODES") == "1" and "SLURM_STEP_ID" in environ
            and environ.get("SLURM_STEP_NUM_TASKS") == str(size))  # srun started the ranks


def _ucx_hooks_off(environ: Any = os.environ) -> bool:
    """On one host, load UCX (the ``mpich`` wheel's network layer) without its memory
    hooks (``UCX_MEM_EVENTS=no``, unless the user set it).  Returns whether it did.

    Installing them patches every loaded library and took 40 ms of each rank's start
    here (on the critical path twice in ``python app.py``: the driver's load, then the
    raylet's).  They keep UCX's registration cache for network transfers true; on one host
    the bytes move through shared memory and that cache has nothing to hold.  Across hosts
    they stay on.
    """
    if "UCX_MEM_EVENTS" in environ or "mpi4py.MPI" in sys.modules or not single_host_hint(environ):
        return False
    environ["UCX_MEM_EVENTS"] = "no"
    return True


def launched_world() -> Transport:
    """COMM_WORLD of a job started by mpiexec/srun."""
    _slurm_pmi2_workaround()
    _ucx_hooks_off()
    MPI = _mpi()
    return Transport(MPI.COMM_WORLD.Dup())


def spawn_world(nprocs: int, args: list[str]) -> Transport:
    """Start ``nprocs`` raylet ranks from this lone process; rank 0 of the result is us."""
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise RuntimeError(
            "mpiray could not find `mpiexec` to start its local ranks. Install the MPI "
            "wheel (`pip install mpich`) into this Python environment, or put your MPI's "
            "bin directory on PATH, or launch the script with `mpiexec -n N python app.py`.")
    bindir = os.path.dirname(mpiexec)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    _ucx_hooks_off()  # the spawned ranks inherit it
    MPI = _mpi()
    inter = MPI.COMM_SELF.Spawn(sys.executable, args=args, maxprocs=nprocs)
    return Transport(inter.Merge(high=False), inter)


def join_parent() -> Transport:
    """The raylet side of ``spawn_world``."""
    MPI = _mpi()
    inter = MPI.Comm.Get_parent()
    return Transport(inter.Merge(high=True), inter)
