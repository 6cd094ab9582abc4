"""On a real GPU (skipped without one): tasks see their device through CuPy."""

import json
import subprocess
import sys

import pytest

from conftest import run

_PROBE = ("import cupy, sys; sys.exit(0 if cupy.cuda.is_available() and "
          "cupy.cuda.runtime.getDeviceCount() > 0 else 3)")


def _why_no_gpu() -> str | None:
    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return "probing CuPy timed out"
    if r.returncode == 0:
        return None
    if b"No module named" in r.stderr:
        return "CuPy is not installed (pip install 'mpiray[gpu]')"
    return "no NVIDIA GPU visible to CuPy on this machine"


_WHY = _why_no_gpu()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=f"GPU tests need a real GPU: {_WHY}")

APP = r'''
import json, os
import mpiray as ray
ray.init(num_cpus=2, num_gpus=1)

@ray.remote(num_gpus=1)
def on_gpu():
    import cupy
    x = cupy.arange(1 << 20, dtype=cupy.float64)
    return {"sum": float(x.sum()), "ids": ray.get_gpu_ids(), "cvd": os.environ["CUDA_VISIBLE_DEVICES"],
            "count": cupy.cuda.runtime.getDeviceCount()}

@ray.remote(num_gpus=0.5)
def half():
    import cupy, time
    t0 = time.time(); cupy.ones(1000).sum(); time.sleep(1.0)
    return t0

out = ray.get(on_gpu.remote())
starts = sorted(ray.get([half.remote(), half.remote()]))
print("OUT", json.dumps({"task": out, "overlap": starts[1] - starts[0] < 0.9}))
ray.shutdown()
'''


def test_num_gpus_task_sees_its_device_through_cupy(tmp_path):
    script = tmp_path / "gpu_app.py"
    script.write_text(APP)
    r = run([sys.executable, str(script)], timeout=180)
    assert r.returncode == 0, r
    out = json.loads(r.stdout.split("OUT", 1)[1])
    assert out["task"]["sum"] == float((1 << 20) * ((1 << 20) - 1) / 2)
    assert out["task"]["count"] == 1 and out["task"]["ids"] == [int(out["task"]["cvd"])]
    assert out["overlap"], "two num_gpus=0.5 tasks must share the GPU at the same time"


def test_gpu_check_suite_runs():
    r = subprocess.run([sys.executable, "-m", "mpiray.gpu.check", "--json"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["cupy"]["available"] and rep["cupy"]["compute_ok"]
    assert rep["nvml"]["available"] and rep["nvml"]["devices"]


ACTOR_APP = r'''
import json
import mpiray as ray
ray.init(num_cpus=2, num_gpus=1)

@ray.remote(num_gpus=1)
class Model:
    """Keeps its weights on the GPU between calls."""
    def __init__(self, n):
        import cupy
        self.w = cupy.zeros(n, dtype=cupy.float32)

    def step(self, k):
        self.w += k
        return float(self.w.sum())

    def device(self):
        import cupy
        return cupy.cuda.runtime.getDevice(), ray.get_gpu_ids()

m = Model.remote(1 << 20)
sums = ray.get([m.step.remote(1.0) for _ in range(5)])
dev = ray.get(m.device.remote())
free_while_alive = ray.available_resources().get("GPU", 0)
ray.kill(m)
print("OUT", json.dumps({"sums": sums, "dev": dev, "free_while_alive": free_while_alive}))
ray.shutdown()
'''


def test_gpu_actor_keeps_device_state_between_calls(tmp_path):
    script = tmp_path / "gpu_actor.py"
    script.write_text(ACTOR_APP)
    r = run([sys.executable, str(script)], timeout=180)
    assert r.returncode == 0, r
    out = json.loads(r.stdout.split("OUT", 1)[1])
    n = 1 << 20
    assert out["sums"] == [float(n * k) for k in range(1, 6)]  # state kept on the device, in order
    assert out["dev"][0] == 0 and len(out["dev"][1]) == 1
    assert out["free_while_alive"] == 0  # the actor holds its GPU
