"""Bringing a cluster up: which mode, who is rank 0, and the start-up handshake.

Modes:
  * launched: ``mpiexec -n N`` / ``srun`` started N ranks; rank 0 returns from
    ``init`` as the driver and every other rank becomes a raylet, then exits;
  * embedded: a lone ``python app.py`` spawns ``num_nodes`` raylet ranks with
    ``MPI_Comm_spawn`` (works with the MPICH wheel) and merges with them.

Handshake (collective, once): rank 0 broadcasts the session and settings;
all ranks exchange host names; raylets send their node description to rank 0.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from typing import Any

from ._comm import mpi
from ._config import Config

STAGING_SLOTS = 8  # chunks in flight per rank (see _store/transfer.py)
ARENA_MAX = 2 << 30  # default ceiling of rank 0's delivery arena


def _arena_bytes(config: Config) -> int:
    """Rank 0's delivery arena (``_store/arena.py``): the setting, else half its store, at
    most ``ARENA_MAX`` (over an RDMA fabric the MPI may register, and so pin, the whole
    window when it is made)."""
    if config.driver_arena_bytes is not None:
        return config.driver_arena_bytes
    from ._node.resources import detect, store_capacity

    return min(ARENA_MAX, store_capacity(config, detect()["memory"]) // 2)


def _node_arena_bytes(config: Config, store_capacity: int) -> int:
    """A raylet's arena for copies of other hosts' objects (``_store/regions.py``): the
    setting, else half its store, at most ``ARENA_MAX``."""
    if config.node_arena_bytes is not None:
        return config.node_arena_bytes
    return min(ARENA_MAX, store_capacity // 2)


def start_driver(config: Config, init_args: dict) -> Any:
    """Start (or join) the cluster; returns the driver runtime on rank 0, never returns elsewhere."""
    from ._control.driver import DriverRuntime

    if mpi.world_size_hint() > 1:
        transport, spawned = mpi.launched_world(), False
        if transport.rank != 0:
            run_raylet(transport)
            sys.exit(0)
    else:
        transport, spawned = mpi.spawn_world(config.num_nodes, ["-m", "mpiray._node.main"]), True
        # one host by construction; and MPI gives spawned and spawning processes no shared
        # memory between them, so objects move through the node's shared-memory files
        config = dataclasses.replace(config, share_host_memory=True)
    session = uuid.uuid4().hex[:12]
    from ._watchdog import listen

    listener = listen(session)  # before the handshake: raylets of this host connect at once
    transport.bcast({"config": config.to_dict(), "init_args": init_args, "session": session,
                     "driver_pid": os.getpid()})
    hosts = transport.allgather(transport.host)
    nodes = transport.gather(None)[1:]
    transport.open_stage(config.staging_bytes, STAGING_SLOTS)
    from ._store import arena

    if arena.wanted(config, hosts):  # collective: right after the staging window, as on raylets
        transport.open_arena(_arena_bytes(config))
    return DriverRuntime(transport, config, session, hosts, nodes, spawned, listener)


def run_raylet(transport: Any, early: Any = None) -> None:
    """Serve as a raylet until rank 0 says shutdown; ``early``: a worker already starting
    (``pool.prestart``)."""
    from ._node.raylet import Raylet
    from ._node.resources import gpu_details, node_resources

    hello = transport.bcast(None)
    session = hello["session"]
    from ._watchdog import connect

    watched = connect(session)  # held for life: its end-of-file tells the watchdog this rank died
    # resources follow this rank's own environment, overridden by init() arguments
    config = Config.from_env().with_args(**hello["init_args"])
    shared = Config(**hello["config"])
    config = config.__class__(**{**shared.to_dict(), **{k: getattr(config, k) for k in
                                 ("num_cpus", "num_gpus", "memory", "resources")}})
    hosts = transport.allgather(transport.host)
    me = transport.rank
    local = [r for r in range(1, transport.size) if hosts[r] == hosts[me]]
    resources, gpu_ids = node_resources(config, local.index(me), len(local))
    node = {"rank": me, "node_id": f"{session[:8]}-n{me}", "host": hosts[me], "pid": os.getpid(),
            "resources": resources, "gpu_ids": gpu_ids, "gpus": gpu_details(gpu_ids) if gpu_ids else []}
    from ._store import arena as arena_mod

    # with an arena window, workers start once it exists (they are forked to share it)
    later = arena_mod.wanted(config, hosts)
    raylet = Raylet(transport, config, session, hosts, node, hello["driver_pid"],
                    start_workers=not later, early=early)  # otherwise workers start now
    raylet.pool.watch_wake(transport.enable_wake(raylet.store.root, hosts))
    transport.gather(node)
    transport.open_stage(config.staging_bytes, STAGING_SLOTS)
    if later:
        transport.open_arena(_node_arena_bytes(config, raylet.capacity))
        if transport.arena is not None:
            raylet.use_arena(transport.arena)  # forks the zygote: before any thread starts
        raylet.start_workers()
    raylet.xfer.start()
    try:
        raylet.serve()
    except BaseException as exc:  # a bug or a signal: say so and end the job, never hang
        _raylet_failed(raylet, transport, hosts[me], exc)
    try:
        transport.close_arena()  # collective with rank 0, after every rank said bye
        transport.close_stage()
        # what rank 0 sent after SHUTDOWN (a heartbeat, frees) is taken, not left unmatched
        # for the MPI to warn of at exit: it sends nothing more once it is past these
        transport.poll()
    finally:
        raylet.pool.shutdown(timeout=1.0)
        if raylet.pool.wake is not None:
            raylet.pool.wake.close()
        transport.close()
        if watched is not None:
            watched.close()


def _raylet_failed(raylet: Any, transport: Any, host: str, exc: BaseException) -> None:
    """This raylet cannot go on: print why, free its workers and objects, abort the job
    (the other ranks cannot finish without it, and waiting for them would hang)."""
    import time
    import traceback

    try:
        text = "" if isinstance(exc, KeyboardInterrupt) else traceback.format_exc()
        raylet.end(f"{text}mpiray: rank {transport.rank} (host {host}, pid {os.getpid()}) failed: "
                   f"{type(exc).__name__}: {exc}. Ending the job.")
        time.sleep(0.2)  # let the launcher forward the message before the abort tears down
    finally:
        transport.abort(1)
