# An idle one-host cluster sleeps: every rank is woken through its pipe when sent
# something, so its loop wakes only for its once-a-second chores (DEEP_POKED), not 20 times
# a second to poll MPI.  Counts the wake-ups (voluntary context switches) of every thread
# of rank 0 and of the raylet over 3 s of idleness.
import os
import time

import mpiray as ray

ray.init(num_cpus=1)


@ray.remote
def f():
    return os.getppid()


raylet = ray.get(f.remote())
time.sleep(2.5)  # past the deep-idle threshold


def wakes(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            for line in status:
                if line.startswith("voluntary_ctxt_switches"):
                    total += int(line.split()[1])
    return total


before = wakes(raylet), wakes(os.getpid())
time.sleep(3)
after = wakes(raylet), wakes(os.getpid())
print("RAYLET_WAKES", after[0] - before[0], "RANK0_WAKES", after[1] - before[1])
assert ray.get(f.remote()) == raylet  # and it still answers at once
ray.shutdown()
