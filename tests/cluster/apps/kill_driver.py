# The driver (rank 0) SIGKILLs itself while a task runs on a raylet; the raylets must end.
import os
import signal
import time

import mpiray as ray

ray.init(num_cpus=1)


@ray.remote
def long_task():
    time.sleep(300)


ref = long_task.remote()
time.sleep(1.0)
print("KILLING", os.getpid(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
