"""Start-up: the time from exec of `python -m controller serve` to the first grpc.health.v1
Check that answers SERVING (the poller connects from before the exec, so its own start is not
counted), median of `--runs`; and the idle RSS a moment later.

    python scripts/bench/startup.py --runs 10

The first start on a new data dir also generates the signing and credential keys; it is reported
apart (`first_start_ms`). The measured starts reuse that data dir with its empty store, as a
restart would."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import report


def start_once(tmp: Path, args: Sequence[str], idle_s: float) -> tuple[float, float]:
    """Exec to SERVING in ms, and RSS in MB after `idle_s` of idling."""
    port = common.free_port()
    log_path = tmp / "controller.log"
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            common.controller_command(port, tmp / "data", args),
            cwd=common.ROOT,
            env=common.controller_env("info"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = common.Server("controller", proc, f"127.0.0.1:{port}", log_path)
    try:
        common.wait_serving(server, 60)
        serving_ms = (time.perf_counter() - started) * 1000
        time.sleep(idle_s)
        return serving_ms, common.rss_mb(proc.pid)
    finally:
        common.stop_process(proc)


def startup(runs: int, *, idle_s: float = 2.0, server_args: Sequence[str] = ()) -> dict[str, Any]:
    with common.workdir("startup") as tmp:
        first_ms, _ = start_once(tmp, server_args, 0.0)
        times, rss = [], []
        for run in range(runs):
            ms, mb = start_once(tmp, server_args, idle_s)
            common.log(f"startup: run {run + 1}/{runs}: SERVING after {ms:.0f} ms, {mb:.1f} MB")
            times.append(ms)
            rss.append(mb)
    return {
        "runs": runs,
        "exec_to_serving_ms": {k: round(v, 1) for k, v in common.spread(times).items()},
        "idle_rss_mb": {k: round(v, 1) for k, v in common.spread(rss).items()},
        "first_start_ms": round(first_ms, 1),
        "idle_s": idle_s,
        "per_run": [
            {"exec_to_serving_ms": t, "idle_rss_mb": m} for t, m in zip(times, rss, strict=True)
        ],
        "load_average_1m": common.load_average()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    result = startup(args.runs)
    print(report.startup_table(result))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "startup": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
