# A script written for Ray: no launcher logic, calls init() itself.
import mpiray as ray

ray.init()


@ray.remote
def square(x):
    return x * x


print("SUM", sum(ray.get([square.remote(i) for i in range(10)])))
print("NODES", len(ray.nodes()))
