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
            print(f"RESULT {name} ok {time.monotonic() - t0:.2f}", flush=True)
        except BaseException as e:  # noqa: BLE001 - reported to pytest
            reason = "".join(traceback.format_exception(e)).replace("\n", " | ")
            print(f"RESULT {name} FAIL {reason}", flush=True)
    ray.shutdown()
