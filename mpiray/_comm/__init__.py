"""The only part of mpiray that imports mpi4py (see ``mpi.py``)."""
