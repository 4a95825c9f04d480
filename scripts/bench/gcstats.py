"""Runs the controller exactly as `python -m controller ...` does, plus a `gc.callbacks` hook that
logs every garbage collection that takes more than 20 ms as a JSON line on stderr:

    {"msg": "gc pause", "generation": 2, "ms": 812.3, "collected": 0, "t": 1795756196.262}

A diagnostic for the benchmarks (`fleet.py --gc-stats`): the event loop runs nothing while the
collector runs, so these pauses show up whole in the ack latencies. The controller is unchanged."""

from __future__ import annotations

import gc
import json
import sys
import time
from typing import Any

THRESHOLD_MS = 20.0
_started = [0.0]


def _timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1000
    if ms >= THRESHOLD_MS:
        line = {
            "msg": "gc pause",
            "generation": info["generation"],
            "ms": round(ms, 1),
            "collected": info["collected"],
            "t": round(time.time(), 3),
        }
        print(json.dumps(line), file=sys.stderr, flush=True)


if __name__ == "__main__":
    from controller.cli import main

    gc.callbacks.append(_timer)
    sys.exit(main(sys.argv[1:]))
