"""GPU check suite for a GPU node: ``python -m mpiray.gpu.check [--json]``.

Reports, without failing where a piece is missing: the GPUs NVML sees (model,
memory), what CuPy sees under this process's ``CUDA_VISIBLE_DEVICES``, whether
the MPI library is CUDA-aware (``MPIX_Query_cuda_support``), and whether CUDA
IPC handles can be exported.  mpiray uses these facts to pick how GPU buffers
move (same process, CUDA IPC, CUDA-aware MPI, or staging through host memory).
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from typing import Any


def nvml_devices() -> dict[str, Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no library, no driver
        return {"available": False, "why": f"{type(exc).__name__}: {exc}"}
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_total": int(mem.total)})
        return {"available": True, "devices": out}
    finally:
        pynvml.nvmlShutdown()


def cupy_devices() -> dict[str, Any]:
    try:
        import cupy
    except ImportError as exc:
        return {"available": False, "why": str(exc)}
    try:
        if not cupy.cuda.is_available():
            return {"available": False, "why": "cupy.cuda.is_available() is False"}
        n = cupy.cuda.runtime.getDeviceCount()
        x = cupy.arange(1 << 20, dtype=cupy.float32)
        ok = float(x.sum()) == float((1 << 20) * ((1 << 20) - 1) / 2)
        return {"available": True, "count": n, "compute_ok": ok,
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    except Exception as exc:
        return {"available": False, "why": f"{type(exc).__name__}: {exc}"}


def mpi_cuda_aware() -> dict[str, Any]:
    """Ask the MPI library itself; the PyPI MPICH and Open MPI wheels answer 0."""
    try:
        from mpi4py import MPI  # noqa: F401 - loads libmpi
    except Exception as exc:
        return {"known": False, "why": str(exc)}
    for name in (None, "libmpi.so.12", "libmpi.so.40", "libmpi.so"):
        try:
            lib = ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
            fn = lib.MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        fn.restype = ctypes.c_int
        return {"known": True, "cuda_aware": bool(fn())}
    return {"known": False, "why": "MPIX_Query_cuda_support not found in the MPI library"}


def cuda_ipc() -> dict[str, Any]:
    try:
        import cupy

        if not cupy.cuda.is_available():
            return {"works": False, "why": "no GPU"}
        buf = cupy.zeros(1 << 20, dtype=cupy.uint8)
        handle = cupy.cuda.runtime.ipcGetMemHandle(buf.data.ptr)
        return {"works": True, "handle_bytes": len(handle)}
    except Exception as exc:
        return {"works": False, "why": f"{type(exc).__name__}: {exc}"}


def report() -> dict[str, Any]:
    return {"nvml": nvml_devices(), "cupy": cupy_devices(), "mpi": mpi_cuda_aware(), "cuda_ipc": cuda_ipc()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rep = report()
    if "--json" in argv:
        print(json.dumps(rep, indent=2))
    else:
        for key, value in rep.items():
            print(f"{key:9s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
