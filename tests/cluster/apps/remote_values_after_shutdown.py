"""Values the driver read from another host stay valid after shutdown (run with
MPIRAY_SHARE_HOST_MEMORY=0 under mpiexec -n 2: rank 1 Puts them into rank 0's arena)."""

import gc

import numpy as np

import mpiray as ray

ray.init(num_cpus=1)
on1 = ray.NodeAffinitySchedulingStrategy([n for n in ray.nodes() if n["Rank"] == 1][0]["NodeID"])


@ray.remote
def make(n, k):
    return np.full(n, k, dtype=np.uint8)


kept = ray.get([make.options(scheduling_strategy=on1).remote(3 << 20, k) for k in (7, 9)])
dropped = ray.get(make.options(scheduling_strategy=on1).remote(1 << 20, 5))
rt = ray._api._rt()
arena = rt.arena
print("DELIVERED", arena is not None and arena.live() == 3)
del dropped
ray.shutdown()
print("KEPT", [int(v.min()) for v in kept], [int(v.max()) for v in kept], arena.live())
del kept
gc.collect()
print("FREED", arena.live())
