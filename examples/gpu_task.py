"""A GPU task: mpiray gives each num_gpus=1 task its own device via CUDA_VISIBLE_DEVICES.

On a machine without a GPU, declare some to see the scheduling:
    MPIRAY_NUM_GPUS=2 python examples/gpu_task.py
"""

import os

import mpiray as ray


@ray.remote(num_gpus=1)
def on_gpu(n: int) -> dict:
    info = {"gpu_ids": ray.get_gpu_ids(), "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        import cupy

        if cupy.cuda.is_available():
            x = cupy.arange(n, dtype=cupy.float64)
            info["sum_on_device"] = float(x.sum())
            info["device"] = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except ImportError:
        pass
    return info


def main() -> None:
    ray.init()
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if not gpus:
        print("no GPUs in this allocation; declare some with MPIRAY_NUM_GPUS=2 to try the scheduling")
        ray.shutdown()
        return
    for info in ray.get([on_gpu.remote(1_000_000) for _ in range(gpus)]):
        print(info)
    ray.shutdown()


if __name__ == "__main__":
    main()
