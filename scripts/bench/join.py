"""A fleet joining at once: N agents with no prior registration start together (a new region, a
restored backup). Each registers (RegisterNode with a request id, retried on a retryable error
with jittered backoff, as the agent does), then opens its heartbeat stream with the token it got
and beats every interval. Meanwhile an operator reads GetNodeStats, paced.

    python scripts/bench/join.py --agents 10000 --runs 1

Reported: time from the start to every node registered and to every node READY (as
GetNodeStats counts them), registrations/s over the whole join and in its best second, the
GetNodeStats latency (from its scheduled time) during the join, the server's CPU, retries and
errors that were not retried (the agent cannot retry those)."""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import multiprocessing
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import common
import fleet
import grpc
import report
import streams
from automator67.v1 import agent_service_pb2_grpc as asg
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio

R = TypeVar("R")
# As the reference agent (controller/agent/runner.py): anything but a refusal is retried.
REFUSALS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNIMPLEMENTED,
}


@dataclass(frozen=True)
class JoinSpec:
    address: str
    metadata: tuple[tuple[str, str], ...] | None
    first: int  # this process's agents are first .. first + count - 1
    count: int
    interval_s: float
    concurrency: int  # registrations + stream opens in flight in this process
    seed: int
    streams: bool = True  # False: register only (RegisterNode throughput)


def worker_main(spec: JoinSpec, conn: Connection) -> None:
    try:
        asyncio.run(_worker(spec, conn))
    finally:
        conn.close()


async def _worker(spec: JoinSpec, conn: Connection) -> None:
    rng = random.Random(spec.seed)
    connections = max(1, spec.count // 50)
    channels = [
        aio.insecure_channel(spec.address, options=streams.CHANNEL_OPTIONS)
        for _ in range(connections)
    ]
    registered = array.array("d")
    opened = array.array("d")
    counts = {"retries": 0, "errors": 0}
    error_kinds: dict[str, int] = {}
    retry_kinds: dict[str, int] = {}
    gate = asyncio.Semaphore(spec.concurrency)

    async def retried(call: Callable[[], Awaitable[R]]) -> R:
        delay = 0.1
        while True:
            try:
                return await call()
            except aio.AioRpcError as exc:
                if exc.code() in REFUSALS:
                    raise
                counts["retries"] += 1
                retry_kinds[exc.code().name] = retry_kinds.get(exc.code().name, 0) + 1
            except streams.StreamEndedError:
                counts["retries"] += 1
                retry_kinds["stream ended"] = retry_kinds.get("stream ended", 0) + 1
            await asyncio.sleep(delay * rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 2.0)

    async def agent(i: int) -> None:
        channel = channels[i % len(channels)]
        stub = nsg.NodeServiceStub(channel)
        request = ns.RegisterNodeRequest(node=fleet.node(i), request_id=f"join-{i}")
        try:
            async with gate:
                reply = await retried(
                    lambda: stub.RegisterNode(request, timeout=60, metadata=spec.metadata)
                )
                registered.append(time.monotonic())
                if not spec.streams:
                    return
                stream = fleet.ControllerStream(
                    asg.AgentServiceStub(channel), reply.node.id, reply.agent_token
                )
                await retried(stream.open)
                opened.append(time.monotonic())
            while True:
                await asyncio.sleep(spec.interval_s * rng.uniform(0.9, 1.0))
                await stream.beat()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            counts["errors"] += 1
            kind = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
            error_kinds[kind] = error_kinds.get(kind, 0) + 1

    loop = asyncio.get_running_loop()
    await asyncio.gather(*(c.channel_ready() for c in channels))
    conn.send(("ready",))
    message = await loop.run_in_executor(None, conn.recv)
    start_at = message[1]
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    agents = [asyncio.create_task(agent(spec.first + k)) for k in range(spec.count)]
    try:
        await loop.run_in_executor(None, conn.recv)  # ("stop",)
    finally:
        for task in agents:
            task.cancel()
        await asyncio.gather(*agents, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.close(None) for c in channels)), 10)
    kinds = {"errors": error_kinds, "retries": retry_kinds}
    result = ("result", registered.tobytes(), opened.tobytes(), counts, kinds)
    await loop.run_in_executor(None, conn.send, result)


async def _poll_stats(
    server: common.Server,
    agents: int,
    start_at: float,
    rate: float,
    timeout_s: float,
    status: str = "NODE_STATUS_READY",
) -> tuple[float, list[float]]:
    """GetNodeStats every 1/rate s (open loop, latency from the scheduled time) until every
    node has `status` ("": is registered) or `timeout_s` passes; returns (seconds until then or
    NaN, latencies)."""
    latencies: list[float] = []
    ready_at = float("nan")
    async with aio.insecure_channel(server.address) as channel:
        stub = nsg.NodeServiceStub(channel)
        await channel.channel_ready()
        inflight: set[asyncio.Task[None]] = set()
        done = asyncio.Event()

        async def one(scheduled: float) -> None:
            nonlocal ready_at
            try:
                reply = await stub.GetNodeStats(
                    ns.GetNodeStatsRequest(), metadata=server.metadata, timeout=30
                )
            except aio.AioRpcError:
                latencies.append(float("inf"))
                return
            latencies.append(time.monotonic() - scheduled)
            count = reply.by_status.get(status, 0) if status else reply.total
            if count >= agents and not done.is_set():
                ready_at = time.monotonic() - start_at
                done.set()

        next_at = start_at
        while not done.is_set() and next_at - start_at < timeout_s:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            task = asyncio.create_task(one(next_at))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            next_at += 1.0 / rate
        await asyncio.gather(*inflight, return_exceptions=True)
    return ready_at, latencies


def join_once(
    agents: int,
    *,
    workers: int,
    interval_s: float,
    concurrency: int,
    stats_rate: float,
    timeout_s: float,
    server_args: Sequence[str],
    streams_too: bool = True,
    gc_stats: bool = False,
) -> dict[str, Any]:
    """One join of `agents` fresh agents on a fresh controller (`streams_too` False: they
    only register); with `gc_stats`, the controller runs through gcstats.py and the join's
    collections that took over 20 ms (the GC policy's own included) are reported."""
    ctx = multiprocessing.get_context("spawn")
    with (
        common.workdir("join") as tmp,
        common.controller(tmp, server_args, gc_stats=gc_stats) as server,
    ):
        pipes: list[Connection] = []
        procs: list[multiprocessing.process.BaseProcess] = []
        try:
            share = -(-agents // workers)
            for w in range(workers):
                first, count = w * share, max(0, min(share, agents - w * share))
                parent_end, child_end = ctx.Pipe()
                spec = JoinSpec(
                    server.address,
                    server.metadata,
                    first,
                    count,
                    interval_s,
                    concurrency,
                    w,
                    streams_too,
                )
                child = ctx.Process(target=worker_main, args=(spec, child_end), daemon=True)
                child.start()
                child_end.close()
                pipes.append(parent_end)
                procs.append(child)
            for p in pipes:
                streams.expect(p, "ready", time.monotonic() + 120, server)
            start_at = time.monotonic() + 0.5
            for p in pipes:
                p.send(("go", start_at))
            pids = [p.pid for p in procs if p.pid is not None]
            streams.sleep_until(start_at)
            start_wall = time.time()
            server_cpu0, client_cpu0 = common.cpu_seconds(server.pid), common.cpu_of(pids)
            status = "NODE_STATUS_READY" if streams_too else ""
            ready_s, latencies = asyncio.run(
                _poll_stats(server, agents, start_at, stats_rate, timeout_s, status)
            )
            elapsed = time.monotonic() - start_at
            server_cpu = common.cpu_seconds(server.pid) - server_cpu0
            client_cpu = common.cpu_of(pids) - client_cpu0
            rss = common.rss_mb(server.pid)
            pauses = common.gc_pauses(server.log_path, start_wall, time.time()) if gc_stats else {}
            for p in pipes:
                p.send(("stop",))
            results = [streams.expect(p, "result", time.monotonic() + 120, server) for p in pipes]
        finally:
            for proc in procs:
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
                    proc.join(10)
            for p in pipes:
                p.close()
    registered, opened = array.array("d"), array.array("d")
    retries = errors = 0
    kinds: dict[str, dict[str, int]] = {"errors": {}, "retries": {}}
    for _, reg, op, counts, worker_kinds in results:
        registered.frombytes(reg)
        opened.frombytes(op)
        retries += counts["retries"]
        errors += counts["errors"]
        for which, seen in worker_kinds.items():
            for k, v in seen.items():
                kinds[which][k] = kinds[which].get(k, 0) + v
    regs = sorted(t - start_at for t in registered)
    all_registered = regs[-1] if len(regs) >= agents else float("nan")
    per_second: dict[int, int] = {}
    for t in regs:
        per_second[int(t)] = per_second.get(int(t), 0) + 1
    ordered = sorted(latencies)
    return {
        "agents": agents,
        "registered": len(regs),
        "streams_opened": len(opened),
        "all_registered_s": round(all_registered, 2),
        "all_ready_s": round(ready_s, 2),
        "registrations_per_s": round(len(regs) / regs[-1], 1) if regs else 0.0,
        "best_second_registrations": max(per_second.values(), default=0),
        "stats_calls": len(ordered),
        "stats_p50_ms": round(common.percentile(ordered, 0.5) * 1000, 2),
        "stats_p99_ms": round(common.percentile(ordered, 0.99) * 1000, 2),
        "stats_max_ms": round(ordered[-1] * 1000, 2) if ordered else float("nan"),
        "server_cpu_pct": round(server_cpu / elapsed * 100, 1),
        # CPU per agent joined (on a shared machine steadier than rates: a starved server is
        # slow, not costlier per agent); the client's says whether the load clients, not the
        # server, could be the limit.
        "server_cpu_us_per_agent": round(server_cpu / max(1, len(regs)) * 1e6),
        "client_cpu_us_per_agent": round(client_cpu / max(1, len(regs)) * 1e6),
        "server_rss_mb": round(rss, 1),
        "client_cpu_pct": round(client_cpu / elapsed * 100, 1),
        "retries": retries,
        "errors": errors,
        "error_kinds": kinds["errors"],
        "retry_kinds": kinds["retries"],
        "load_average_1m": common.load_average()[0],
        **pauses,
    }


def join(
    agents: int,
    runs: int,
    *,
    workers: int = 3,
    interval_s: float = 10.0,
    concurrency: int = 1000,
    stats_rate: float = 10.0,
    timeout_s: float = 300.0,
    streams_too: bool = True,
    server_args: Sequence[str] = (),
    gc_stats: bool = False,
) -> dict[str, Any]:
    """`runs` joins of `agents` agents, each on a fresh controller; medians and each run."""
    windows = []
    for run in range(runs):
        common.log(f"join: {agents} agents, run {run + 1}/{runs}")
        w = join_once(
            agents,
            workers=workers,
            interval_s=interval_s,
            concurrency=concurrency,
            stats_rate=stats_rate,
            timeout_s=timeout_s,
            server_args=[*fleet.paced_server_args(interval_s), *server_args],
            streams_too=streams_too,
            gc_stats=gc_stats,
        )
        pauses = (
            f"; gc pauses over 100 ms {w['gc_pauses_over_100ms']}, longest"
            f" {w['gc_pause_max_ms']:.0f} ms"
            if gc_stats
            else ""
        )
        common.log(
            f"join: {w['registered']} registered in {w['all_registered_s']:.1f}s "
            f"({w['registrations_per_s']:.0f}/s, best second {w['best_second_registrations']}), "
            f"all READY in {w['all_ready_s']:.1f}s; GetNodeStats p99 {w['stats_p99_ms']:.1f} ms; "
            f"server {w['server_cpu_pct']:.0f}% CPU ({w['server_cpu_us_per_agent']} us per agent,"
            f" clients {w['client_cpu_us_per_agent']} us); retries {w['retries']}, "
            f"errors {w['errors']} {w['error_kinds'] or ''} {w['retry_kinds'] or ''}{pauses}"
        )
        windows.append(w)
    summary = common.aggregate(windows)
    summary["per_run"] = windows
    summary["concurrency_per_process"] = concurrency
    summary["workers"] = workers
    summary["streams"] = streams_too
    return summary


def join_table(result: dict[str, Any]) -> str:
    headers = (
        "agents",
        "all registered s",
        "registrations/s",
        "best second",
        "all READY s",
        "GetNodeStats p50 / p99 / max ms",
        "server CPU %",
        "client CPU %",
        "server / client CPU per agent, us",
        "retries / errors",
    )
    r = result
    row = [
        f"{common.med(r['agents']):,.0f}",
        common.fmt(r["all_registered_s"], 1),
        common.fmt(r["registrations_per_s"], 0),
        common.fmt(r["best_second_registrations"], 0),
        common.fmt(r["all_ready_s"], 1),
        f"{common.fmt(r['stats_p50_ms'], 1)} / {common.fmt(r['stats_p99_ms'], 1)}"
        f" / {common.fmt(r['stats_max_ms'], 0)}",
        common.fmt(r["server_cpu_pct"], 0),
        common.fmt(r["client_cpu_pct"], 0),
        f"{common.fmt(r['server_cpu_us_per_agent'], 0)}"
        f" / {common.fmt(r['client_cpu_us_per_agent'], 0)}",
        f"{common.fmt(r['retries'], 0)} / {common.fmt(r['errors'], 0)}",
    ]
    what = (
        "register, then stream" if r.get("streams", True) else "register only; READY = registered"
    )
    pauses = ""
    if "gc_pause_max_ms" in r:
        pauses = (
            "\nController garbage collections during the join (gcstats.py):"
            f" {report.gc_summary(r)}.\n"
        )
    return (
        f"### A fleet joining at once ({what})\n\n"
        + common.markdown_table(headers, [row])
        + "\n"
        + pauses
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=3, help="client processes")
    parser.add_argument("--interval-s", type=float, default=10.0)
    parser.add_argument(
        "--concurrency", type=int, default=1000, help="registrations in flight per process"
    )
    parser.add_argument("--stats-rate", type=float, default=10.0, help="GetNodeStats per second")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--register-only", action="store_true", help="no streams: RegisterNode throughput"
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="one more argument of `automator67 serve` (repeat: --server-arg=--flag)",
    )
    parser.add_argument(
        "--gc-stats", action="store_true", help="report the controller's long collections"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    result = join(
        args.agents,
        args.runs,
        workers=args.workers,
        interval_s=args.interval_s,
        concurrency=args.concurrency,
        stats_rate=args.stats_rate,
        timeout_s=args.timeout_s,
        streams_too=not args.register_only,
        server_args=args.server_arg,
        gc_stats=args.gc_stats,
    )
    print(join_table(result))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "join": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
