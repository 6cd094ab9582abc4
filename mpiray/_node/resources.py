"""What a node may use: from the allocation (Slurm, affinity, CUDA_VISIBLE_DEVICES), not the hardware.

``detect`` returns the host's grant; ``share`` splits it between the raylets
that run on one host (tests and "one raylet per GPU" jobs run several).
Settings (``init(num_cpus=...)``, ``MPIRAY_NUM_CPUS`` ...) override detection.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from .._options import to_units


def _cpus(environ: Mapping[str, str]) -> int:
    for var in ("SLURM_CPUS_ON_NODE",):
        text = environ.get(var, "")
        if text.isdigit() and int(text) > 0:
            return int(text)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _gpu_ids(environ: Mapping[str, str]) -> list[str]:
    text = environ.get("CUDA_VISIBLE_DEVICES")
    if text is not None:
        return [g for g in (t.strip() for t in text.split(",")) if g and g != "-1" and g.lower() != "nodevfiles"]
    for var in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        text = environ.get(var, "")
        if text:
            return [g.strip() for g in text.split(",") if g.strip()]
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
        try:
            return [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no device: no GPUs
        return []


def _memory(environ: Mapping[str, str]) -> int:
    for var, scale in (("SLURM_MEM_PER_NODE", 1 << 20),):
        text = environ.get(var, "")
        if text.isdigit() and int(text) > 0:
            return int(text) * scale
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
            if text.isdigit() and int(text) < (1 << 60):
                return int(text)
        except OSError:
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):  # pragma: no cover
        return 0


def gpu_details(gpu_ids: list[str]) -> list[dict]:
    """Model and memory of each GPU from NVML (CUDA_DEVICE_ORDER=PCI_BUS_ID order); [] without it."""
    try:
        import pynvml  # noqa: PLC0415

        pynvml.nvmlInit()
    except Exception:  # no library, no driver, NoDevFiles: nothing to say
        return []
    try:
        out = []
        for g in gpu_ids:
            try:
                h = pynvml.nvmlDeviceGetHandleByIndex(int(g))
                name = pynvml.nvmlDeviceGetName(h)
                out.append({"id": g, "name": name.decode() if isinstance(name, bytes) else name,
                            "memory": int(pynvml.nvmlDeviceGetMemoryInfo(h).total)})
            except Exception:  # a declared GPU that NVML does not know (tests, UUIDs)
                pass
        return out
    finally:
        pynvml.nvmlShutdown()


def detect(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    env = os.environ if environ is None else environ
    return {"cpus": _cpus(env), "gpu_ids": _gpu_ids(env), "memory": _memory(env)}


def node_resources(config: Any, local_index: int, local_count: int,
                   environ: Mapping[str, str] | None = None) -> tuple[dict[str, int], list[str]]:
    """Resources (integer units) and GPU ids of the ``local_index``-th raylet of its host."""
    host = detect(environ)
    if config.num_cpus is not None:
        cpus = float(config.num_cpus)
    else:
        cpus = max(1, host["cpus"] // local_count)
    gpu_ids = host["gpu_ids"][local_index::local_count]
    if config.num_gpus is not None:
        n = int(config.num_gpus)
        gpu_ids = gpu_ids[:n] if len(gpu_ids) >= n else [str(i) for i in range(n)]
    memory = config.memory if config.memory is not None else host["memory"] // local_count
    res = {"CPU": to_units(cpus), "GPU": to_units(len(gpu_ids)), "memory": to_units(memory)}
    for key, value in (config.resources or {}).items():
        res[key] = to_units(value)
    return {k: v for k, v in res.items() if v}, gpu_ids


STORE_FRACTION = 0.3  # of the node's memory, as in Ray


def store_capacity(config: Any, node_memory_bytes: int) -> int:
    """Bytes the node's object store may hold: the setting, else a share of the node's memory."""
    if config.object_store_memory is not None:
        return int(config.object_store_memory)
    return max(64 << 20, int(node_memory_bytes * STORE_FRACTION))
