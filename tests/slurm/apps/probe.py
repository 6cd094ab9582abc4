"""A small mpiray program for the Slurm tests: report what the cluster sees, check it, exit.

    probe.py --raylets 2 [--cpus 2] [--gpus 2] [--sleep 600] [--marker TEXT]

Prints ``PROBE key=value`` lines the tests read; any failed check exits non-zero.
"""

import argparse
import os
import time

import mpiray

p = argparse.ArgumentParser()
p.add_argument("--raylets", type=int, required=True, help="expected raylet ranks")
p.add_argument("--cpus", type=float, default=None, help="expected cluster CPUs")
p.add_argument("--gpus", type=int, default=0, help="expected cluster GPUs; one task per GPU")
p.add_argument("--sleep", type=float, default=0, help="then hold tasks and sleep this long")
p.add_argument("--marker", default="", help="unused; makes the command line findable in /proc")
args = p.parse_args()


@mpiray.remote
def where():
    return os.getpid(), os.environ.get("SLURM_JOB_ID")


@mpiray.remote(num_gpus=1)
def gpu_task():
    time.sleep(0.5)  # overlap, so every GPU is held at once
    return os.environ.get("CUDA_VISIBLE_DEVICES"), mpiray.get_gpu_ids()


@mpiray.remote(num_cpus=0.5)
def nap(seconds):
    time.sleep(seconds)


mpiray.init()
from mpi4py import MPI  # noqa: E402 - after init: mpiray started MPI

world = MPI.COMM_WORLD.Get_size()
nodes = mpiray.nodes()
res = mpiray.cluster_resources()
hosts = sorted({n["NodeManagerHostname"] for n in nodes})
print(f"PROBE world_size={world} raylets={len(nodes)} hosts={','.join(hosts)}", flush=True)
print(f"PROBE cpus={res.get('CPU', 0)} gpus={res.get('GPU', 0)} "
      f"slurm_job={os.environ.get('SLURM_JOB_ID')}", flush=True)
assert world == args.raylets + 1, f"world size {world}, expected {args.raylets + 1}"
assert len(nodes) == args.raylets, f"{len(nodes)} raylets, expected {args.raylets}"
if args.cpus is not None:
    assert res.get("CPU", 0) == args.cpus, f"CPU {res.get('CPU')}, expected {args.cpus}"
assert res.get("GPU", 0) == args.gpus, f"GPU {res.get('GPU')}, expected {args.gpus}"
pid, job = mpiray.get(where.remote())
assert job == os.environ.get("SLURM_JOB_ID"), (job, os.environ.get("SLURM_JOB_ID"))

if args.gpus:
    seen = mpiray.get([gpu_task.remote() for _ in range(args.gpus)], timeout=60)
    for visible, ids in seen:
        print(f"PROBE gpu_task CUDA_VISIBLE_DEVICES={visible} gpu_ids={ids}", flush=True)
    assert sorted(v for v, _ in seen) == sorted({v for v, _ in seen}), f"GPU shared: {seen}"

if args.sleep:
    naps = [nap.remote(args.sleep) for _ in range(args.raylets)]
    time.sleep(1.0)
    print(f"PROBE sleeping {args.sleep}s", flush=True)
    time.sleep(args.sleep)

mpiray.shutdown()
print("PROBE done", flush=True)
