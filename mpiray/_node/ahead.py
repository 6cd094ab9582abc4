"""Tasks a raylet sends ahead to a busy worker, behind its running task (a mixin of
``Raylet``): the worker starts each the moment the one before ends, with no wait for a
raylet round.

* ``_prefetch``: queued tasks of the same resource shape (they take over the running
  task's resources), for functions that usually run under ``PREFETCH_MAX_SECONDS``.
* ``_chain``: a task that waits only for the result of the worker's last task (a chain
  of dependent calls); the worker takes that argument from its own last results
  (``m.CHAINED``).

A worker blocked in ``get()`` hands such tasks back (``W_BOUNCE``); a worker that dies
leaves them unstarted; either way they wait or queue again (``_take_back``).
"""

from __future__ import annotations

from typing import Any

from .._protocol import messages as m
from .local import LocalTask

PREFETCH_MAX_SECONDS = 0.002  # only behind functions that usually run shorter
PREFETCH_DEPTH = 16  # at most this many tasks sent ahead to one worker (about 2 ms of work)
# beyond the first, only tasks with this few inline bytes go ahead: what waits in a worker's
# socket stays well under its buffer, so the raylet's write never blocks (the worker may be
# blocked sending its result to the raylet at the same time)
PREFETCH_SMALL_BYTES = 4096


def _inline_bytes(task: LocalTask) -> int:
    """Bytes of arguments and inputs that travel inside the task's W_RUN message."""
    args = task.spec.args
    n = args.nbytes() if args is not None else 0
    for info in task.deps.values():
        if info[0] == "inline":
            n += info[1].nbytes()
    return n


class RayletAhead:
    def _ahead_depth(self, cur: LocalTask) -> int:
        """How many tasks may wait behind ``cur`` in its worker (0: none, it runs long)."""
        took = self.durations.get(cur.spec.func_id, 1.0)
        if took > PREFETCH_MAX_SECONDS:
            return 0
        return max(1, min(PREFETCH_DEPTH, int(PREFETCH_MAX_SECONDS / max(took, 1e-6))))

    def _prefetch(self, sent: list[Any]) -> None:
        """Queue the next short tasks in busy workers' sockets, behind their running task.

        Only tasks with the same resource shape as the running one (each takes over
        those resources when the one before ends), only CPU tasks, only for
        functions whose recent runs were short (as many as fill about
        ``PREFETCH_MAX_SECONDS``, at most ``PREFETCH_DEPTH``), and never behind a
        task blocked in get().
        The worker starts each the moment the one before ends, with no wait for a
        raylet round; several sent together cost the worker one wake-up.
        """
        for w in self.pool.workers.values():
            if not self.queue:
                return
            cur = w.task
            if cur is None or w.blocked or cur.gpus or w.leased is not None or cur.spec.actor is not None:
                continue  # (a leased worker takes tasks from rank 0 only; an actor's, its calls)
            depth = self._ahead_depth(cur)
            if not depth:
                continue
            added = False
            while self.queue and len(w.ahead) < depth:
                head = self.queue[0]
                if (head.spec.demand != cur.spec.demand or head.cancel is not None
                        or head.spec.actor is not None):
                    break
                if w.ahead and _inline_bytes(head) > PREFETCH_SMALL_BYTES:
                    break  # only one big message ahead: a write to the worker must never block
                self.queue.popleft()
                head.gpus = ()
                w.ahead.append(head)
                self._send_run(w, head)
                added = True
            if added and w not in sent:
                sent.append(w)

    def _chain(self, sent: list[Any]) -> None:
        """Send a busy worker, behind its last task, the task that waits for that task's
        result alone (a chain of dependent tasks): the worker runs it the moment the one
        before ends, taking the argument from that task's results (``m.CHAINED``), with
        no round through this raylet per link.

        Only where the result has no other waiting consumer (several go to whichever
        worker is free), and under the rules of ``_prefetch``.  A worker that cannot use
        the result (its task failed) reports the chained task's argument lost, and rank 0
        sends it again once the argument is settled, as for any lost argument.
        """
        for w in self.pool.workers.values():
            cur = w.task
            if cur is None or w.blocked or cur.gpus or w.leased is not None or cur.spec.actor is not None:
                continue
            depth = self._ahead_depth(cur)
            if not depth:
                continue
            added = False
            while len(w.ahead) < depth:
                last = w.ahead[-1] if w.ahead else cur
                nxt = None
                for oid in last.spec.return_ids:
                    waiters = self.dep_waiters.get(oid)
                    if waiters and len(waiters) == 1:
                        nxt = waiters[0]
                        break
                if (nxt is None or nxt.missing != 1 or nxt.spec.task_id not in self.waiting
                        or nxt.spec.demand != cur.spec.demand or nxt.cancel is not None
                        or nxt.spec.actor is not None
                        or (w.ahead and _inline_bytes(nxt) > PREFETCH_SMALL_BYTES)):
                    break
                del self.dep_waiters[oid]
                nxt.deps[oid] = m.CHAINED
                nxt.missing = 0
                nxt.gpus = ()
                w.ahead.append(nxt)
                self._send_run(w, nxt)
                self.chained += 1
                self.unreported = added = True
            if added and w not in sent:
                sent.append(w)

    def _take_back(self, task: LocalTask) -> None:
        """A task sent ahead comes back unstarted (bounced, or its worker died): it queues
        again, or, if it was chained, waits for that argument as for any other made here."""
        task.worker = None
        for oid, info in task.deps.items():
            if info == m.CHAINED:  # its maker has not ended (it ran or waits on that worker)
                self.dep_waiters.setdefault(oid, []).append(task)
                task.missing += 1
        if task.missing == 0:
            self.queue.appendleft(task)
