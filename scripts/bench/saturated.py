"""Heartbeat fleet, saturated: a closed loop (each stream sends its next beat as soon as the last
is acked) to find the most beats/s the controller sustains and its CPU-seconds per 1,000 beats;
then etcd's LeaseKeepAlive the same way (the anchor) and, with `--floor`, the bare grpc.aio
server (bare_grpc.py), same client, and the ratios.

    python scripts/bench/saturated.py --agents 1000 --duration-s 15 --runs 3

The client processes' CPU is reported too: on this 2-core machine they share the cores with the
server, so when client CPU plus server CPU reach ~200% the figure is a machine limit, not the
server's alone.

The controller limits each stream to a burst of 10 beats, then 4 per heartbeat interval
(heartbeat_stream.StreamSettings; no flag relaxes it). So the controller runs here with
`--heartbeat-interval-s 0.05` (80 beats/s per stream allowed) and liveness deadlines far longer
than the run, which keeps its health monitor at its normal 0.25 s tick."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
import etcd
import fleet
import report
import streams

SATURATED_INTERVAL_S = 0.05
SERVER_ARGS = [
    "--heartbeat-interval-s",
    str(SATURATED_INTERVAL_S),
    "--suspect-after-s",
    "30",
    "--offline-after-s",
    "60",
]


def saturated(
    agents: int,
    settings: streams.Settings,
    runs: int,
    *,
    anchor: bool,
    floor: bool = False,
    restored: bool = False,
    gc_stats: bool = False,
) -> dict[str, Any]:
    target = fleet.controller_target(SERVER_ARGS, restored=restored, gc_stats=gc_stats)
    ours = streams.measure(target, agents, settings, runs, gc_stats=gc_stats)
    result: dict[str, Any] = {"agents": agents, "controller": ours}
    if floor:
        fleet.measure_floor(result, agents, settings, runs)
    if anchor:
        theirs = streams.measure(etcd.etcd_target(ttl_s=60), agents, settings, runs)
        result["etcd"] = theirs
        result["ratios"] = streams.ratios(ours, theirs)
    for side, _ in report.SIDES:
        if side in result:
            us = common.med(result[side].get("server_cpu_us_per_beat"))
            result[side]["server_cpu_s_per_1000_beats"] = round(us / 1000, 4)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    streams.add_fleet_arguments(parser, interval_s=SATURATED_INTERVAL_S)
    streams.add_floor_argument(parser)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    settings = streams.settings_from(args, "closed")
    anchor = not args.no_anchor and etcd.available()
    results = [
        saturated(
            n,
            settings,
            args.runs,
            anchor=anchor,
            floor=args.floor,
            restored=args.restored,
            gc_stats=args.gc_stats,
        )
        for n in args.agents
    ]
    print(report.fleet_table("Heartbeat fleet, saturated (closed loop)", results))
    if args.json:
        common.write_json(Path(args.json), {"machine": common.machine(), "saturated": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
