"""Entry point of raylet ranks started by ``MPI_Comm_spawn`` (embedded mode)."""

from __future__ import annotations


def main() -> None:
    from .pool import prestart

    early = prestart()  # one worker comes up while MPI does (one host, no arena: a fresh one)
    from .._comm import mpi
    from .._startup import run_raylet

    run_raylet(mpi.join_parent(), early)


if __name__ == "__main__":
    main()
