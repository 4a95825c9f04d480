"""The HTTP/JSON gateway's cost per call: `GET /api/v1/nodes/{id}` over HTTP against `GetNode`
over gRPC, on one controller (`--http-port`), the same nodes, the same admin token.

Closed loop: `--concurrency` calls in flight from one client process (aiohttp with keep-alive
for HTTP, one grpc.aio channel for gRPC), for `--duration-s`, the two alternated `--runs` times.
Reported per transport: calls/s, the controller's CPU per call (its whole process: the gateway
runs in it) and client-side p50/p99; then HTTP's figures as a ratio to gRPC's.

    python scripts/bench/http_gateway.py --nodes 200 --duration-s 5 --runs 3"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import common
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio


async def register(stub: Any, metadata: Any, count: int) -> list[str]:
    ids = []
    for i in range(count):
        node = node_pb2.Node(
            provider="fly",
            endpoint=f"https://n{i}.example.com",
            region="us-east-1",
            capabilities=node_pb2.Capabilities(cpu_cores=4, memory_gb=8),
        )
        reply = await stub.RegisterNode(ns.RegisterNodeRequest(node=node), metadata=metadata)
        ids.append(reply.node.id)
    return ids


async def closed_loop(
    call: Callable[[str], Awaitable[None]], ids: list[str], concurrency: int, duration_s: float
) -> list[float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration_s
    rng = random.Random(7)

    async def worker() -> None:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            await call(rng.choice(ids))
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    http_port = common.free_port()
    with (
        common.workdir("http") as work,
        common.controller(work, ["--http-port", str(http_port)], log_level="warning") as server,
    ):
        headers = {"Authorization": f"Bearer {server.token}"}
        base = f"http://127.0.0.1:{http_port}/api/v1/nodes/"
        async with (
            aio.insecure_channel(server.address) as channel,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=args.concurrency)
            ) as session,
        ):
            stub = nsg.NodeServiceStub(channel)
            ids = await register(stub, server.metadata, args.nodes)

            async def over_grpc(node_id: str) -> None:
                await stub.GetNode(ns.GetNodeRequest(node_id=node_id), metadata=server.metadata)

            async def over_http(node_id: str) -> None:
                async with session.get(base + node_id, headers=headers) as response:
                    await response.read()
                    assert response.status == 200, response.status

            calls = {"grpc": over_grpc, "http": over_http}
            for call in calls.values():  # warm both paths (connections, caches)
                await closed_loop(call, ids, args.concurrency, 1.0)
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
            for _ in range(args.runs):
                for name, call in calls.items():
                    cpu_before = common.cpu_seconds(server.pid)
                    started = time.perf_counter()
                    latencies = await closed_loop(call, ids, args.concurrency, args.duration_s)
                    elapsed = time.perf_counter() - started
                    cpu = common.cpu_seconds(server.pid) - cpu_before
                    ordered = sorted(latencies)
                    runs[name].append(
                        {
                            "calls_per_s": len(latencies) / elapsed,
                            "server_cpu_us_per_call": cpu / len(latencies) * 1e6,
                            "p50_ms": common.percentile(ordered, 0.50) * 1000,
                            "p99_ms": common.percentile(ordered, 0.99) * 1000,
                        }
                    )
    return {name: common.aggregate(values) for name, values in runs.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    common.install_signal_handlers()
    result = asyncio.run(measure(args))
    keys = ("calls_per_s", "server_cpu_us_per_call", "p50_ms", "p99_ms")
    rows = [[name, *(common.fmt(result[name][k]) for k in keys)] for name in ("grpc", "http")]
    rows.append(
        ["http / grpc", *(common.fmt(common.ratio(result["http"][k], result["grpc"][k]), 2)
                          for k in keys)]
    )  # fmt: skip
    print(common.markdown_table(["transport", *keys], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
