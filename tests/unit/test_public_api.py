import subprocess
import sys

import mpiray


def test_all_is_the_public_api():
    assert sorted(mpiray.__all__) == sorted(n for n in mpiray.__all__ if hasattr(mpiray, n))
    for name in ("init", "shutdown", "is_initialized", "remote", "get", "put", "wait", "nodes",
                 "cluster_resources", "available_resources", "get_runtime_context", "get_gpu_ids",
                 "ObjectRef", "exceptions"):
        assert name in mpiray.__all__, name
    import types

    # subpackages (mpiray.launch, mpiray.gpu) become attributes once imported: not API names
    public = {n for n in dir(mpiray) if not n.startswith("_")
              and not isinstance(getattr(mpiray, n), types.ModuleType)}
    assert public <= set(mpiray.__all__), public - set(mpiray.__all__)


def test_exceptions_have_rays_names():
    ex = mpiray.exceptions
    for name in ("GetTimeoutError", "TaskCancelledError", "WorkerCrashedError", "ObjectLostError",
                 "RayTaskError", "RaySystemError", "ObjectStoreFullError", "RayError"):
        assert issubclass(getattr(ex, name), ex.MpirayError)
    assert issubclass(ex.GetTimeoutError, TimeoutError)


def test_import_has_no_side_effects():
    code = ("import sys, threading, os; before = set(os.environ); import mpiray; "
            "assert 'mpi4py.MPI' not in sys.modules, 'MPI started at import'; "
            "assert threading.active_count() == 1, 'thread started at import'; "
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_use_before_init_is_a_clear_error():
    @mpiray.remote
    def f():
        return 1

    for call in (lambda: f.remote(), lambda: mpiray.put(1), lambda: mpiray.nodes()):
        try:
            call()
        except mpiray.exceptions.RaySystemError as e:
            assert "mpiray.init()" in str(e)
        else:
            raise AssertionError("use before init must raise")
    assert not mpiray.is_initialized()


def test_remote_function_direct_call_and_bad_decorator_use():
    @mpiray.remote(num_cpus=2)
    def f(x):
        return x

    try:
        f(1)
    except TypeError as e:
        assert "f.remote(" in str(e)
    else:
        raise AssertionError
    assert f._function(3) == 3
    for bad in (lambda: mpiray.remote(1, 2), lambda: mpiray.remote(bogus=1)):
        try:
            bad()
        except (TypeError, ValueError):
            pass
        else:
            raise AssertionError


def test_init_rejects_unknown_arguments():
    try:
        mpiray.init(num_cpu=4)
    except TypeError as e:
        assert "num_cpu" in str(e) and "num_cpus" in str(e)
    else:
        raise AssertionError
