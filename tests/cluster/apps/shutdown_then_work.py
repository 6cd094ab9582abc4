import mpiray as ray

ray.init(num_cpus=1)
ref = ray.put(1)
assert ray.get(ref) == 1
ray.shutdown()
assert not ray.is_initialized()
try:
    ray.get(ref)
except ray.exceptions.RaySystemError as e:
    print("AFTER_SHUTDOWN", "init" in str(e))
ray.init(num_cpus=1)  # a second embedded cluster in the same process
print("SECOND", ray.get(ray.put(2)))
ray.shutdown()
