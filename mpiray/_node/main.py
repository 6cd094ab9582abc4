"""Entry point of raylet ranks started by ``MPI_Comm_spawn`` (embedded mode)."""

from __future__ import annotations


def main() -> None:
    from .._comm import mpi
    from .._startup import run_raylet

    run_raylet(mpi.join_parent())


if __name__ == "__main__":
    main()
