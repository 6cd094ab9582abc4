# Start a cluster, stay idle, and report the CPU time all its processes burn.
import os
import time

import mpiray as ray

ray.init(num_cpus=2, num_nodes=int(os.environ.get("NODES", "1")))


@ray.remote
def warm():
    return os.getpid()


ray.get([warm.remote() for _ in range(4)])
time.sleep(1.5)  # let every loop back off to its idle sleep


def cluster_cpu_seconds(marker):
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            if f"MPIRAY_TEST_MARKER={marker}".encode() not in open(f"/proc/{d}/environ", "rb").read():
                continue
            fields = open(f"/proc/{d}/stat").read().split(") ", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            pass
    return total


marker = os.environ["MPIRAY_TEST_MARKER"]
c0, t0 = cluster_cpu_seconds(marker), time.monotonic()
time.sleep(3.0)
c1, t1 = cluster_cpu_seconds(marker), time.monotonic()
print(f"IDLE_CPU_FRACTION {(c1 - c0) / (t1 - t0):.4f}")
ray.shutdown()
