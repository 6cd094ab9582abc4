"""GPU support: what a node's GPUs and MPI can do (``python -m mpiray.gpu.check``)."""
