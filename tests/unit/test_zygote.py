"""Workers forked by a zygote (``_node/zygote.py``): they are the forking process's children,
start as workers, report their exit like Popen, and nothing outlives ``close``.  Each case
runs in a fresh interpreter (the zygote may only be forked by a process without threads)."""

import subprocess
import sys
import textwrap

PROLOGUE = textwrap.dedent("""
    import atexit, json, os, shutil, signal, socket, sys, tempfile, threading
    from multiprocessing.connection import Connection
    from mpiray._node.zygote import Zygote

    tmp = tempfile.mkdtemp(prefix="mpiray-zygotetest-")
    atexit.register(shutil.rmtree, tmp, True)
    CTX = {"store_capacity": 1 << 26, "spill_root": tmp, "rank": 1, "host": "h", "node_id": "n1",
           "session": "zygotetest00", "store_root": os.path.join(tmp, "mpiray-zygotetest00"),
           "inline_limit": 1024, "log_to_driver": False}

    def spawn(z):
        ours, theirs = socket.socketpair()
        env = dict(os.environ, MPIRAY_WORKER_CONTEXT=json.dumps(CTX))
        proc = z.spawn(env, theirs.fileno())
        theirs.close()
        return proc, Connection(ours.detach())

    def parent_of(pid):
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
""")


def run(body: str) -> str:
    r = subprocess.run([sys.executable, "-c", PROLOGUE + textwrap.dedent(body)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_forked_workers_are_children_that_start_and_exit_like_popen():
    out = run("""
        z = Zygote.start()
        assert z is not None
        proc, conn = spawn(z)
        kind, pid = conn.recv()  # the worker's first message: ready, with its pid
        assert kind == "ready" and pid == proc.pid and proc.poll() is None
        assert parent_of(pid) == os.getpid()  # re-parented: this process waits for it
        conn.send(("exit",))
        assert proc.wait(10) == 0
        proc2, conn2 = spawn(z)
        conn2.recv()
        proc2.kill()
        assert proc2.wait(10) == -signal.SIGKILL
        zpid = z.pid
        z.close()
        try:
            os.kill(zpid, 0)
            print("ZYGOTE LEFT")
        except ProcessLookupError:
            print("CLEAN")
    """)
    assert "CLEAN" in out


def test_a_worker_ends_when_its_raylet_dies():
    out = run("""
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:  # plays the raylet: forks a zygote and a worker, tells the pid, dies
            z = Zygote.start()
            proc, conn = spawn(z)
            conn.recv()
            os.write(w, str(proc.pid).encode().ljust(16))
            os._exit(0)
        pid = int(os.read(r, 16))
        os.waitpid(middle, 0)
        import time
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print("GONE")
                break
            time.sleep(0.05)
    """)
    assert "GONE" in out


def test_no_zygote_in_a_process_with_python_threads():
    out = run("""
        ev = threading.Event()
        t = threading.Thread(target=ev.wait)
        t.start()
        print("NONE" if Zygote.start() is None else "FORKED")
        ev.set()
        t.join()
    """)
    assert "NONE" in out


def test_a_dead_zygote_is_replaced_and_the_new_one_shares_the_memory():
    out = run("""
        import mmap
        from mpiray._node.pool import Pool
        shared = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED: what forked workers see
        probe = memoryview(shared)[:8]
        pool = Pool(dict(CTX), max_idle=2)
        pool.zygote, pool.zygote_probe = Zygote.start(probe), probe
        first = pool.zygote.pid
        os.kill(first, signal.SIGKILL)
        w = pool.start(())  # the dead zygote is noticed, replaced, and forks the worker
        kind, pid = w.conn.recv()
        assert kind == "ready" and pid == w.pid and pool.zygote.pid != first
        pool.shutdown(timeout=5)
        assert pool.zygote is None
        try:
            os.kill(pid, 0)
            print("WORKER LEFT")
        except ProcessLookupError:
            print("REPLACED")
    """)
    assert "REPLACED" in out


def test_no_zygote_once_the_cuda_driver_is_loaded(tmp_path):
    fake = tmp_path / "libcuda.so.1"  # what /proc/self/maps shows once CUDA is loaded
    fake.write_bytes(b"\0" * 4096)
    out = run(f"""
        import mmap
        f = open({str(fake)!r}, "rb")
        m = mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ)
        print("NONE" if Zygote.start() is None else "FORKED")
    """)
    assert "NONE" in out
