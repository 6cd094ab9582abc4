# A script that never calls init(): `python -m mpiray` must have done it.
import mpiray as ray

assert ray.is_initialized()


@ray.remote
def rank():
    return ray.get_runtime_context().rank


print("RANKS", sorted(set(ray.get([rank.remote() for _ in range(40)]))))
