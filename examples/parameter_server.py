"""Actors: a parameter server holds the model; workers (tasks) pull it, compute a gradient
on their shard of the data, and push it back.  The server's state lives between calls, and
its calls run one at a time in the order they were made, so no update is lost."""

import numpy as np

import mpiray as ray


@ray.remote
class ParameterServer:
    def __init__(self, dim: int, lr: float):
        self.w = np.zeros(dim)
        self.lr = lr
        self.updates = 0

    def get_weights(self) -> np.ndarray:
        return self.w

    def apply(self, grad: np.ndarray) -> int:
        self.w -= self.lr * grad
        self.updates += 1
        return self.updates


@ray.remote
def gradient(ps, x: np.ndarray, y: np.ndarray) -> int:
    """One step of least squares on a shard: pull the weights, push the gradient."""
    w = ray.get(ps.get_weights.remote())
    grad = 2 * x.T @ (x @ w - y) / len(y)
    return ray.get(ps.apply.remote(grad))


def main() -> None:
    ray.init(num_cpus=2)
    rng = np.random.default_rng(0)
    true_w = rng.normal(size=8)
    shards = []
    for _ in range(4):
        x = rng.normal(size=(500, 8))
        shards.append((ray.put(x), ray.put(x @ true_w)))
    ps = ParameterServer.remote(8, 0.1)
    for _ in range(50):
        ray.get([gradient.remote(ps, x, y) for x, y in shards])
    w = ray.get(ps.get_weights.remote())
    print(f"updates={ray.get(ps.apply.remote(np.zeros(8))) - 1} error={np.abs(w - true_w).max():.1e}")
    ray.shutdown()


if __name__ == "__main__":
    main()
