"""Simulated fleet: N agents, each with its own heartbeat stream, beating every T seconds, against
a controller this script starts (or one at --target). Reports beats/s, ack latency percentiles,
and the controller's CPU and RSS from /proc.

    python scripts/bench/fleet.py --agents 1000 --interval-s 1 --duration-s 30

The controller runs as its own process with its own data dir; every process started is stopped.
Not part of the test suite (tests/e2e/test_bench_smoke.py runs it tiny so that it never rots)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import queue
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg

if TYPE_CHECKING:
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    beats: int = 0
    errors: int = 0
    streams: int = 0


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_controller(data_dir: Path, interval_s: float) -> tuple[subprocess.Popen[str], str]:
    """Starts a controller on a free port; its stderr is drained by a thread (a full pipe would
    stall it) and the port read from its "serving" log line."""
    cmd = [
        sys.executable,
        "-m",
        "controller",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        "--heartbeat-interval-s",
        str(interval_s),
    ]
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "LOG_LEVEL": "info"}
    )
    ports: queue.Queue[int] = queue.Queue()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if '"serving"' in line:
                ports.put(json.loads(line)["port"])

    threading.Thread(target=drain, daemon=True).start()
    try:
        return proc, f"127.0.0.1:{ports.get(timeout=30)}"
    except queue.Empty:
        proc.kill()
        raise RuntimeError("the controller did not start") from None


async def register(stub: NodeServiceAsyncStub, count: int) -> list[str]:
    caps = node_pb2.Capabilities(cpu_cores=4, memory_gb=8)
    ids: list[str] = []
    for start in range(0, count, 200):
        batch = [
            stub.RegisterNode(
                ns.RegisterNodeRequest(
                    node=node_pb2.Node(provider="sim", endpoint=f"sim-{i}", capabilities=caps)
                )
            )
            for i in range(start, min(count, start + 200))
        ]
        ids += [r.node.id for r in await asyncio.gather(*batch)]
    return ids


async def agent(
    stub: NodeServiceAsyncStub, node_id: str, interval_s: float, stop: asyncio.Event, tally: Tally
) -> None:
    sent: dict[int, float] = {}

    async def requests() -> AsyncIterator[hb.HeartbeatRequest]:
        yield hb.HeartbeatRequest(hello=hb.AgentHello(node_id=node_id, agent_version="bench"))
        await asyncio.sleep(random.uniform(0, interval_s))  # spread the fleet over the interval
        sequence = 0
        while not stop.is_set():
            sequence += 1
            sent[sequence] = time.perf_counter()
            yield hb.HeartbeatRequest(
                beat=hb.Beat(sequence=sequence, load=hb.NodeLoad(cpu_percent=10))
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)

    call = stub.Heartbeat(requests())
    try:
        async for response in call:
            if response.WhichOneof("kind") == "session":
                tally.streams += 1
            elif response.WhichOneof("kind") == "ack":
                started = sent.pop(response.ack.sequence, None)
                if started is not None:
                    tally.latencies.append(time.perf_counter() - started)
                    tally.beats += 1
    except grpc.aio.AioRpcError:
        if not stop.is_set():
            tally.errors += 1


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace, target: str, pid: int | None) -> dict[str, float]:
    channels = [
        grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.connections)
    ]
    stubs = [nsg.NodeServiceStub(c) for c in channels]
    ids = await register(stubs[0], args.agents)
    stop = asyncio.Event()
    tally = Tally()
    tasks = [
        asyncio.create_task(agent(stubs[i % len(stubs)], node_id, args.interval_s, stop, tally))
        for i, node_id in enumerate(ids)
    ]
    await asyncio.sleep(args.warmup_s)
    tally.latencies.clear()
    beats0 = tally.beats
    cpu0 = proc_cpu_s(pid) if pid else 0.0
    own0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.sleep(args.duration_s)
    elapsed = time.perf_counter() - t0
    beats = tally.beats - beats0
    result = {
        "agents": args.agents,
        "streams": tally.streams,
        "interval_s": args.interval_s,
        "beats_per_s": round(beats / elapsed, 1),
        "ack_p50_ms": round(percentile(tally.latencies, 0.5) * 1000, 2),
        "ack_p99_ms": round(percentile(tally.latencies, 0.99) * 1000, 2),
        "ack_p999_ms": round(percentile(tally.latencies, 0.999) * 1000, 2),
        "errors": tally.errors,
        "client_cpu_pct": round((time.process_time() - own0) / elapsed * 100, 1),
    }
    if pid:
        cpu = proc_cpu_s(pid) - cpu0
        result["controller_cpu_pct"] = round(cpu / elapsed * 100, 1)
        result["controller_cpu_us_per_beat"] = round(cpu / max(beats, 1) * 1e6, 1)
        result["controller_rss_mb"] = round(proc_rss_mb(pid), 1)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for channel in channels:
        await channel.close(None)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--target", help="an already running controller (CPU/RSS not measured)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, target = (
            (None, args.target) if args.target else start_controller(Path(tmp), args.interval_s)
        )
        try:
            idle_rss = proc_rss_mb(proc.pid) if proc else 0.0
            result = asyncio.run(run(args, target, proc.pid if proc else None))
            if proc:
                result["controller_idle_rss_mb"] = round(idle_rss, 1)
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=30)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
