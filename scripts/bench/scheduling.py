"""A scheduler that cannot place: idle CPU and GetNodeStats latency (issue 9, item 2).

`--nodes` nodes are registered through RegisterNode (4 cpu each); then, with the controller
stopped, they are marked READY and `--deployments` deployments of `--replicas` replicas asking
64 cpu (which fit nowhere) are created, both through the store's contract; the controller is
restarted on that store (a heartbeat interval of 5 min and a long failover grace keep the
nodes READY without streams) and given `--settle-s` to run its first passes. Then two windows:
- idle: nothing calls; the controller's CPU over `--window-s`;
- GetNodeStats: paced at `--rate` calls/s (open loop; latency from the scheduled time, so a
  stalled event loop shows), p50, p99 and max over `--window-s`.

    python scripts/bench/scheduling.py --nodes 10000 --deployments 100 --replicas 1000

Prints a markdown table; `--json` writes the figures."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import common
import fleet
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio

SERVER_ARGS = [
    "--heartbeat-interval-s",
    "300",
    "--failover-grace-s",
    "2000",
    "--stream-max-age-s",
    "4000",
]


async def prepare_store(data_dir: Path, deployments: int, replicas: int) -> int:
    """Marks every node READY and creates the deployments that fit nowhere, through the store's
    contract, with the controller stopped; returns how many nodes were marked."""
    from controller.models import (
        Deployment,
        DeploymentStatus,
        Resources,
        StatusChange,
    )
    from controller.store import open_store

    marked = await fleet.mark_ready(data_dir)
    store = open_store(f"sqlite:///{data_dir / 'controller.db'}")
    await store.open()
    try:
        now = datetime.now(UTC)
        reason = "waiting to be scheduled"
        for i in range(deployments):
            await store.deployments.create(
                Deployment(
                    id=str(uuid.uuid4()),
                    name=f"unplaceable-{i}",
                    image="busybox",
                    create_time=now,
                    update_time=now,
                    replicas=replicas,
                    resources=Resources(64, 1, 0),
                    status=DeploymentStatus.PENDING,
                    status_reason=reason,
                    history=(StatusChange(DeploymentStatus.PENDING, reason, now),),
                )
            )
    finally:
        await store.close()
    return marked


async def get_node_stats(
    address: str, metadata: Any, rate: float, window_s: float
) -> dict[str, float]:
    """GetNodeStats paced at `rate`/s for `window_s`; latencies in ms from the scheduled time."""
    latencies: list[float] = []
    errors = 0
    async with aio.insecure_channel(address) as channel:
        stub = nsg.NodeServiceStub(channel)
        try:
            await stub.GetNodeStats(ns.GetNodeStatsRequest(), metadata=metadata, timeout=60)
        except aio.AioRpcError:  # the event loop is held: no paced window worth running
            nan = float("nan")
            return {"calls": 0, "errors": 1, "p50_ms": nan, "p99_ms": nan, "max_ms": nan}

        async def one(scheduled: float) -> None:
            nonlocal errors
            try:
                await stub.GetNodeStats(ns.GetNodeStatsRequest(), metadata=metadata, timeout=60)
                latencies.append((time.perf_counter() - scheduled) * 1000)
            except aio.AioRpcError:
                errors += 1

        start = time.perf_counter()
        tasks = []
        for k in range(int(rate * window_s)):
            scheduled = start + k / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    ordered = sorted(latencies)
    return {
        "calls": len(ordered),
        "errors": errors,
        "p50_ms": round(common.percentile(ordered, 0.50), 2),
        "p99_ms": round(common.percentile(ordered, 0.99), 2),
        "max_ms": round(ordered[-1], 2) if ordered else float("nan"),
    }


def run(
    nodes: int, deployments: int, replicas: int, settle_s: float, window_s: float, rate: float
) -> dict[str, Any]:
    with common.workdir("scheduling") as tmp:
        with common.controller(tmp, SERVER_ARGS) as server:
            common.log(f"  registering {nodes:,} nodes")
            asyncio.run(fleet.register_nodes(server.address, nodes, server.metadata))
        marked = asyncio.run(prepare_store(tmp / "data", deployments, replicas))
        common.log(
            f"  {marked:,} nodes READY, {deployments} x {replicas} replicas that fit nowhere;"
            " restarting the controller"
        )
        with common.controller(tmp, SERVER_ARGS) as server:
            time.sleep(settle_s)
            before = common.cpu_seconds(server.pid)
            started = time.perf_counter()
            time.sleep(window_s)
            idle_cpu = (common.cpu_seconds(server.pid) - before) / (time.perf_counter() - started)
            calls = asyncio.run(get_node_stats(server.address, server.metadata, rate, window_s))
    return {
        "nodes": nodes,
        "deployments": deployments,
        "replicas_each": replicas,
        "settle_s": settle_s,
        "window_s": window_s,
        "rate": rate,
        "idle_cpu_pct": round(idle_cpu * 100, 1),
        "get_node_stats": calls,
    }


def table(results: Sequence[dict[str, Any]]) -> str:
    headers = [
        "nodes",
        "deployments x replicas",
        "idle CPU %",
        "GetNodeStats p50 ms",
        "p99 ms",
        "max ms",
        "calls / errors",
    ]
    rows = [
        [
            f"{r['nodes']:,}",
            f"{r['deployments']} x {r['replicas_each']:,}",
            common.fmt(r["idle_cpu_pct"]),
            common.fmt(r["get_node_stats"]["p50_ms"], 2),
            common.fmt(r["get_node_stats"]["p99_ms"], 2),
            common.fmt(r["get_node_stats"]["max_ms"], 2),
            f"{r['get_node_stats']['calls']} / {r['get_node_stats']['errors']}",
        ]
        for r in results
    ]
    return common.markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--deployments", type=int, default=100)
    parser.add_argument("--replicas", type=int, default=1_000)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=10.0, help="GetNodeStats calls/s")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    result = run(
        args.nodes, args.deployments, args.replicas, args.settle_s, args.window_s, args.rate
    )
    print(table([result]))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "scheduling": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
