import sys
import mpiray as ray

ray.init(num_cpus=1)


@ray.remote
def ok():
    return 1


assert ray.get(ok.remote()) == 1
print("ABOUT TO FAIL", flush=True)
raise RuntimeError("driver bug " + sys.argv[1])
