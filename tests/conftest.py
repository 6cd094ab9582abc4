"""Shared helpers: run a script on real MPI ranks with a deadline and check for leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def mpiexec() -> str:
    exe = BIN / "mpiexec"
    if exe.exists():
        return str(exe)
    from mpiray._comm.mpi import find_mpiexec

    found = find_mpiexec()
    if found is None:
        pytest.skip("no mpiexec: install the `mpich` wheel into this environment")
    return found


def processes_with_marker(marker: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every live process whose environment holds ``marker``."""
    found = []
    needle = f"MPIRAY_TEST_MARKER={marker}".encode()
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read()
            if needle in env:
                with open(f"/proc/{d}/stat") as f:
                    if f.read().split(") ", 1)[1].startswith("Z"):
                        continue
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    found.append((int(d), f.read().replace(b"\0", b" ").decode(errors="replace")))
        except OSError:
            continue
    return found


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, marker: str, elapsed: float):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.marker = marker
        self.elapsed = elapsed

    def leftovers(self, wait: float = 5.0) -> list:
        end = time.monotonic() + wait
        while True:
            left = processes_with_marker(self.marker)
            if not left or time.monotonic() > end:
                return left
            time.sleep(0.1)

    def __repr__(self) -> str:
        return f"<Run rc={self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}>"


def run(cmd: list[str], timeout: float = 90, env: dict | None = None, cwd: str | None = None) -> Run:
    """Run ``cmd`` in its own process group; on timeout kill the group and fail."""
    marker = uuid.uuid4().hex
    full_env = dict(os.environ, MPIRAY_TEST_MARKER=marker, PYTHONUNBUFFERED="1")
    full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.update(env or {})
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full_env, cwd=cwd or str(ROOT), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        for pid, _ in processes_with_marker(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        pytest.fail(f"deadline of {timeout}s passed: {cmd}\n--- stdout\n{out}\n--- stderr\n{err}")
    result = Run(subprocess.CompletedProcess(cmd, proc.returncode, out, err), marker,
                 time.monotonic() - t0)
    return result


def run_mpi(script: str, ranks: int, *args: str, timeout: float = 90, env: dict | None = None) -> Run:
    return run([mpiexec(), "-n", str(ranks), sys.executable, script, *args], timeout=timeout, env=env)


def run_python(script: str, *args: str, timeout: float = 90, env: dict | None = None) -> Run:
    return run([sys.executable, script, *args], timeout=timeout, env=env)


def scenario_results(stdout: str) -> dict:
    """{name: (status, detail)} from the RESULT lines of a scenario script."""
    results = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            _, name, status, *rest = line.split(" ", 3)
            results[name] = (status, rest[0] if rest else "")
    return results


def scenario_names(path) -> list:
    import re

    return re.findall(r"^def (scenario_\w+)", Path(path).read_text(), re.M)


def check_scenario(mode: str, result: "Run", results: dict, name: str) -> None:
    assert name in results, f"[{mode}] scenario {name} did not report (rc={result.returncode})\n{result!r}"
    status, detail = results[name]
    assert status == "ok", f"[{mode}] {name}: {detail.replace(' | ', chr(10))}"


def scenario_suite(script, modes: dict, timeout: float = 150):
    """The fixture and tests for a scenario script: one cluster run per mode.

    ``modes`` maps a label to ``(argv, env)`` (argv a callable returning the command,
    so mpiexec is looked up when the test runs).  Returns ``(suite_run,
    test_scenario, test_run_ends_cleanly)`` for the test module to bind by name.
    """
    names = scenario_names(script)

    @pytest.fixture(scope="module", params=sorted(modes))
    def suite_run(request):
        argv, env = modes[request.param]
        result = run(argv(), timeout=timeout, env=env)
        return request.param, result, scenario_results(result.stdout)

    @pytest.mark.parametrize("name", names)
    def test_scenario(suite_run, name):
        check_scenario(*suite_run, name)

    def test_run_ends_cleanly(suite_run):
        mode, result, _ = suite_run
        assert result.returncode == 0, result
        assert result.leftovers() == [], f"[{mode}] processes of the job are still running"

    return suite_run, test_scenario, test_run_ends_cleanly
