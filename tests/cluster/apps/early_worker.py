# An embedded raylet starts one worker before it knows its job (it gets its context as its
# first message, pool.prestart): that worker runs tasks like any, and no stray one is left.
import os

import mpiray as ray

ray.init(num_cpus=2, num_nodes=1)


@ray.remote
def who(_):
    import time

    time.sleep(0.2)  # both run at once: two workers
    return os.getpid(), os.getppid()


got = ray.get([who.remote(i) for i in range(2)])
raylet = got[0][1]
workers = {pid for pid, _ in got}
children = {int(p) for p in open(f"/proc/{raylet}/task/{raylet}/children").read().split()}
# the worker started ahead was started without its context in its environment
ahead = [pid for pid in children if b"MPIRAY_WORKER_CONTEXT=" not in open(f"/proc/{pid}/environ", "rb").read()]
print("WORKERS", len(workers), "CHILDREN", len(children), "SAME", workers == children,
      "AHEAD", len(ahead))
ray.shutdown()
