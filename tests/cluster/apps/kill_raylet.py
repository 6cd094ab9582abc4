# Kill one raylet rank with SIGKILL while a task runs there; the job must end, not hang.
import os
import signal
import sys
import time

import mpiray as ray

ray.init(num_cpus=1, num_nodes=2)
victim = [n for n in ray.nodes() if n["Rank"] == 2][0]


@ray.remote(scheduling_strategy=ray.NodeAffinitySchedulingStrategy(victim["NodeID"]))
def long_task():
    time.sleep(300)


ref = long_task.remote()
time.sleep(1.0)
print("KILLING", victim["Pid"], flush=True)
os.kill(victim["Pid"], signal.SIGKILL)
ray.get(ref)  # must not hang: the job ends
print("UNREACHABLE", flush=True)
sys.exit(0)
