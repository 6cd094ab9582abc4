"""Runs the ``scenario_*`` functions of a script on one cluster; one RESULT line each."""

import json
import sys
import time
import traceback

import mpiray as ray


def run_scenarios(namespace: dict) -> None:
    ray.init(**json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
    names = (sys.argv[2].split(",") if len(sys.argv) > 2 else
             [n for n in namespace if n.startswith("scenario_")])
    for name in names:
        t0 = time.monotonic()
        try:
            namespace[name]()
            _say(f"RESULT {name} ok {time.monotonic() - t0:.2f}")
        except BaseException as e:  # noqa: BLE001 - reported to pytest
            reason = "".join(traceback.format_exception(e)).replace("\n", " | ")
            _say(f"RESULT {name} FAIL {reason}")
    ray.shutdown()


def _say(line: str) -> None:
    """One write for the whole line: tasks' output reaches the same stdout through the MPI
    launcher at any moment, and print()'s separate write of the newline let a task's line
    land inside a RESULT line (the scenario then read as not reported)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
