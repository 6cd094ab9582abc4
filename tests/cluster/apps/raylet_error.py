# A raylet meets an error it cannot handle (here: a message it does not know); the job
# must end at once with a message naming the rank, not hang.
import time

import mpiray as ray

ray.init(num_cpus=1)
rt = ray._api._rt()
print("BREAKING", flush=True)
with rt.service.io_lock:
    rt.transport.send(1, ("no_such_message",))
    rt.transport.flush()
time.sleep(60)
print("UNREACHABLE", flush=True)
