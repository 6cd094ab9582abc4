"""Run ``mpiexec`` as a child and name the rank whose death ended the job.

MPICH's mpiexec answers the death of any rank by SIGKILLing the others at
once, so no mpiray rank lives long enough to say which rank died.  mpiexec's
own report names a process id and host, but it is the lowest rank that ended
badly, often one that mpiexec itself killed, not the one that died first.

``python -m mpiray -n N`` and ``mpiray run`` start mpiexec through
``run_supervised``: rank 0 writes the job's rank table (rank, pid, host) to the
file named by ``MPIRAY_RANK_TABLE``; the supervisor watches the ranks of its
host through pidfds, and when the job fails it says which rank died first.
Ranks on other hosts cannot be watched from here: for a job over several
hosts it stays silent rather than guess (under srun, mpiray names the rank
itself).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading

from ._watchdog import RankDeaths

TABLE_ENV = "MPIRAY_RANK_TABLE"


def write_rank_table(ranks: list[tuple[int, int, str]]) -> None:
    """On rank 0, under ``run_supervised``: record (rank, pid, host) of every rank."""
    path = os.environ.get(TABLE_ENV)
    if not path:
        return
    try:
        with open(path + ".tmp", "w") as f:
            json.dump(ranks, f)
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # naming a dead rank is a courtesy; never fail the job for it


class _Watcher:
    """Waits for the rank table, then records the deaths of this host's ranks."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.deaths: RankDeaths | None = None
        self.one_host = False
        self.stop_r, self.stop_w = os.pipe()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.stop_r, select.POLLIN)
        while not os.path.exists(self.table):
            if poller.poll(20):
                return
        try:
            with open(self.table) as f:
                ranks = [tuple(r) for r in json.load(f)]
        except (OSError, ValueError):
            return
        host = socket.gethostname()
        self.one_host = all(h == host for _, _, h in ranks)
        deaths = RankDeaths([r for r in ranks if r[2] == host])
        deaths.register(poller)
        self.deaths = deaths
        while deaths.ranks:
            ready = {fd for fd, _ in poller.poll()}
            if self.stop_r in ready:
                return
            deaths.seen(ready, poller)

    def finish(self) -> str:
        """Stop watching; the first death in words, or '' when it cannot be told."""
        os.write(self.stop_w, b"x")
        self.thread.join(timeout=5)
        os.close(self.stop_r)
        os.close(self.stop_w)
        if self.deaths is None:
            return ""
        self.deaths.close()
        return self.deaths.first() if self.one_host else ""


def run_supervised(cmd: list[str]) -> int:
    """Run ``cmd`` (an mpiexec command line) to its end; return its exit status."""
    folder = tempfile.mkdtemp(prefix="mpiray-ranks-")
    table = os.path.join(folder, "ranks.json")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        proc = subprocess.Popen(cmd, env={**os.environ, TABLE_ENV: table})
    except OSError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        sys.stderr.write(f"mpiray: could not start {cmd[0]}: {exc}\n")
        return 127
    # mpiexec gets the terminal's signals too (same process group); these only keep this
    # process alive until mpiexec is done with them
    previous = {s: signal.signal(s, lambda sig, _f: None) for s in (signal.SIGINT, signal.SIGTERM)}
    watcher = _Watcher(table)
    try:
        rc = proc.wait()
        first = watcher.finish()
        if rc != 0 and first:
            sys.stderr.write(f"mpiray: the job failed because {first}.\n")
            sys.stderr.flush()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        shutil.rmtree(folder, ignore_errors=True)
    return rc
