# Every rank of the host listens on a wake-up pipe in the session folder while the job
# runs; a task sent after a long idle pause still runs; nothing is left after shutdown.
import os
import stat
import time

import mpiray as ray

ray.init(num_cpus=1, num_nodes=2)


@ray.remote
def f():
    return 1


assert ray.get(f.remote()) == 1
folder = ray._api._rt().store.root
pipes = sorted(p for p in os.listdir(folder) if p.startswith(".wake-"))
assert all(stat.S_ISFIFO(os.stat(os.path.join(folder, p)).st_mode) for p in pipes)
print("PIPES", " ".join(pipes))
time.sleep(2.5)  # past the loops' deep idle sleep
t0 = time.perf_counter()
assert ray.get([f.remote(), f.remote()]) == [1, 1]
print(f"AFTER_IDLE_MS {1e3 * (time.perf_counter() - t0):.2f}")  # for the eye; benchmarks time it
ray.shutdown()
print("FOLDER_LEFT", os.path.exists(folder))
