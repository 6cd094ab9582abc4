"""``python -m mpiray [-n N] script.py [args...]``: run a Ray-style script on mpiray.

Without ``-n`` the script runs in the current MPI world (``mpiexec -n 4 python
-m mpiray app.py``, ``srun python -m mpiray app.py``) or, alone, on an
embedded local cluster.  With ``-n N`` mpiray starts ``mpiexec -n N`` itself.
mpiray is initialised before the script runs, so the script's own
``ray.init()`` call is accepted as is.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpiray", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--np", type=int, default=None, help="start N ranks with mpiexec (1 driver + N-1 raylets)")
    parser.add_argument("script", help="the Python script to run")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    ns = parser.parse_args(argv)
    if not os.path.exists(ns.script):
        parser.error(f"no such script: {ns.script}")
    if ns.np is not None:
        if ns.np < 2:
            parser.error("-n must be at least 2 (rank 0 is the driver, the others are raylets)")
        from ._comm.mpi import find_mpiexec, world_size_hint

        if world_size_hint() > 1:
            parser.error("-n was given but this process already runs under an MPI launcher")
        mpiexec = find_mpiexec()
        if mpiexec is None:
            parser.error("mpiexec not found: `pip install mpich`, or put your MPI's bin directory on PATH")
        cmd = [mpiexec, "-n", str(ns.np), sys.executable, "-m", "mpiray", ns.script, *ns.args]
        os.execv(mpiexec, cmd)
    from . import _api

    _api.init()
    _api._accept_script_init = True
    sys.argv = [ns.script, *ns.args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(ns.script)))
    try:
        runpy.run_path(ns.script, run_name="__main__")
    finally:
        _api.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
