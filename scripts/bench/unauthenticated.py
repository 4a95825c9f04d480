"""Unauthenticated floods (issue 9, item 4): what a caller without a token costs the server.

`--requests` RegisterNode calls of `--mb` MB each, `--concurrency` at a time, with no token;
meanwhile a bystander with an admin token calls GetNodeStats every 50 ms. Reports the
controller's CPU seconds for the flood, the flood's duration, every code the flood got, and the
bystander's p50/p99/max latency. Then `--sockets` raw TCP connections that never send the HTTP/2
preface: how long until the server has closed them all (A67_HANDSHAKE_TIMEOUT_S, set to
`--handshake-timeout-s`).

    python scripts/bench/unauthenticated.py --requests 115 --mb 12"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
from automator67.v1 import node_service_pb2 as ns
from grpc import aio

REGISTER = "/automator67.v1.NodeService/RegisterNode"
STATS = "/automator67.v1.NodeService/GetNodeStats"


async def flood(server: common.Server, requests: int, mb: int, concurrency: int) -> dict[str, Any]:
    body = b"\x0a" + b"\xff" * 5 + b"x" * (mb << 20)  # what it says does not matter: unread
    options = [("grpc.max_send_message_length", 64 << 20)]
    codes: Counter[str] = Counter()
    latencies: list[float] = []
    async with aio.insecure_channel(server.address, options=options) as channel:
        call = channel.unary_unary(  # raw bytes: sent as they are
            REGISTER, request_serializer=_identity, response_deserializer=_identity
        )
        stats = channel.unary_unary(
            STATS,
            request_serializer=ns.GetNodeStatsRequest.SerializeToString,
            response_deserializer=ns.GetNodeStatsResponse.FromString,
        )
        done = asyncio.Event()

        async def bystander() -> None:
            while not done.is_set():
                started = time.perf_counter()
                await stats(ns.GetNodeStatsRequest(), metadata=server.metadata, timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)

        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                try:
                    await call(body, timeout=60)
                    codes["OK"] += 1
                except aio.AioRpcError as error:
                    codes[error.code().name] += 1

        watcher = asyncio.create_task(bystander())
        cpu_before, started = common.cpu_seconds(server.pid), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        seconds = time.perf_counter() - started
        cpu = common.cpu_seconds(server.pid) - cpu_before
        done.set()
        await watcher
    ordered = sorted(latencies)
    return {
        "requests": requests,
        "mb": mb,
        "flood_s": round(seconds, 2),
        "server_cpu_s": round(cpu, 2),
        "codes": dict(codes),
        "bystander_ms": {
            "p50": round(common.percentile(ordered, 0.5), 1),
            "p99": round(common.percentile(ordered, 0.99), 1),
            "max": round(ordered[-1], 1),
        },
    }


def _identity(data: bytes) -> bytes:
    return data


def idle_sockets(server: common.Server, count: int, timeout_s: float) -> dict[str, Any]:
    host, port = server.address.rsplit(":", 1)
    sockets = [socket.create_connection((host, int(port))) for _ in range(count)]
    started = time.perf_counter()
    open_ = list(sockets)
    while open_ and time.perf_counter() - started < timeout_s:
        still = []
        for s in open_:
            s.settimeout(0.05)
            try:
                if s.recv(1024) == b"":  # closed by the server
                    s.close()
                    continue
            except TimeoutError:
                pass
            except OSError:
                s.close()
                continue
            still.append(s)
        open_ = still
    for s in open_:
        s.close()
    return {
        "sockets": count,
        "closed": count - len(open_),
        "all_closed_after_s": round(time.perf_counter() - started, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=115)
    parser.add_argument("--mb", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--handshake-timeout-s", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    server_args = ["--handshake-timeout-s", f"{args.handshake_timeout_s:g}"]
    with common.workdir("unauth") as work, common.controller(work, server_args) as server:
        result = asyncio.run(flood(server, args.requests, args.mb, args.concurrency))
        result["idle"] = idle_sockets(server, args.sockets, args.handshake_timeout_s * 4)
    print(
        common.markdown_table(
            ["flood", "server CPU", "duration", "codes", "bystander p50/p99/max", "idle sockets"],
            [
                [
                    f"{args.requests} x {args.mb} MB, no token",
                    f"{result['server_cpu_s']} s",
                    f"{result['flood_s']} s",
                    ", ".join(f"{k} {v}" for k, v in result["codes"].items()),
                    "{p50} / {p99} / {max} ms".format(**result["bystander_ms"]),
                    "{closed}/{sockets} closed after {all_closed_after_s} s".format(
                        **result["idle"]
                    ),
                ]
            ],
        )
    )
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "unauthenticated": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
