"""Runs the controller exactly as `python -m controller ...` does, plus a `gc.callbacks` hook that
logs every garbage collection that takes more than 20 ms as a JSON line on stderr:

    {"msg": "gc pause", "generation": 2, "ms": 812.3, "collected": 0, "t": 1795756196.262}

A diagnostic for the benchmarks (`fleet.py --gc-stats`): the event loop runs nothing while the
collector runs, so these pauses show up whole in the ack latencies. The controller is unchanged.

With `BENCH_GC_CENSUS=1` in the environment (not an A67_ variable: the bench drops those), every
collection is logged, with the objects it walked (`walked`, counted before it starts and outside
its `ms`), and every 10 s a "gc census" line gives the objects in each generation, the frozen
ones, and the 25 most common types in generations 1 and 2 (not frozen). Counting walks the heap:
a census run is slower than a plain one, use it to see what is collected, not to time it."""

from __future__ import annotations

import collections
import gc
import json
import os
import sys
import threading
import time
from typing import Any

THRESHOLD_MS = 20.0
CENSUS = os.environ.get("BENCH_GC_CENSUS") == "1"
_started = [0.0]
_walked = [0]


def _timer(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        if CENSUS:
            _walked[0] = sum(len(gc.get_objects(g)) for g in range(info["generation"] + 1))
        _started[0] = time.perf_counter()
        return
    ms = (time.perf_counter() - _started[0]) * 1000
    if ms >= THRESHOLD_MS or CENSUS:
        line = {
            "msg": "gc pause",
            "generation": info["generation"],
            "ms": round(ms, 1),
            "collected": info["collected"],
            "t": round(time.time(), 3),
        }
        if CENSUS:
            line["walked"] = _walked[0]
        print(json.dumps(line), file=sys.stderr, flush=True)


def _census(every_s: float = 10.0) -> None:
    while True:
        time.sleep(every_s)
        old = gc.get_objects(1) + gc.get_objects(2)
        types = collections.Counter(type(o).__qualname__ for o in old)
        young = collections.Counter(type(o).__qualname__ for o in gc.get_objects(0))
        line = {
            "msg": "gc census",
            "t": round(time.time(), 3),
            "generations": [len(gc.get_objects(g)) for g in range(3)],
            "frozen": gc.get_freeze_count(),
            "count": gc.get_count(),
            "threshold": gc.get_threshold(),
            "old_types": types.most_common(25),
            "young_types": young.most_common(25),
        }
        del old, young
        print(json.dumps(line), file=sys.stderr, flush=True)


if __name__ == "__main__":
    from controller.cli import main

    gc.callbacks.append(_timer)
    if os.environ.get("BENCH_TRACEMALLOC"):
        import tracemalloc

        tracemalloc.start(8)

        def _dumps() -> None:
            n = 0
            while True:
                time.sleep(10)
                n += 1
                tracemalloc.take_snapshot().dump(
                    f"{os.environ['BENCH_TRACEMALLOC']}/snap-{os.getpid()}-{n}"
                )

        threading.Thread(target=_dumps, daemon=True).start()
    if CENSUS:
        threading.Thread(target=_census, name="gc-census", daemon=True).start()
    sys.exit(main(sys.argv[1:]))
