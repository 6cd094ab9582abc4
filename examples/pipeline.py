"""A DAG: fetch -> process -> aggregate, the shape of most data pipelines.

    python examples/pipeline.py              # laptop: embedded local cluster
    mpiexec -n 3 python examples/pipeline.py # any MPI launcher
    srun python examples/pipeline.py         # inside a Slurm allocation
"""

import time

import numpy as np

import mpiray as ray


@ray.remote
def fetch(shard: int) -> np.ndarray:
    rng = np.random.default_rng(shard)
    return rng.standard_normal(1_000_000)  # 8 MB: stored in shared memory, passed by reference


@ray.remote
def process(samples: np.ndarray) -> dict:
    return {"n": samples.size, "sum": float(samples.sum()), "sumsq": float((samples ** 2).sum())}


@ray.remote
def aggregate(parts: list) -> dict:
    n = sum(p["n"] for p in parts)
    mean = sum(p["sum"] for p in parts) / n
    var = sum(p["sumsq"] for p in parts) / n - mean ** 2
    return {"n": n, "mean": mean, "std": var ** 0.5}


def main() -> None:
    t0 = time.perf_counter()
    ray.init()
    stats = [process.remote(fetch.remote(i)) for i in range(16)]
    result = ray.get(aggregate.remote(stats))  # a list of refs arrives as a list of values
    print(f"samples={result['n']} mean={result['mean']:+.4f} std={result['std']:.4f}")
    print(f"nodes={len(ray.nodes())} cpus={ray.cluster_resources()['CPU']:g} "
          f"wall={time.perf_counter() - t0:.2f}s")
    assert result["n"] == 16_000_000 and abs(result["std"] - 1) < 0.01
    ray.shutdown()


if __name__ == "__main__":
    main()
