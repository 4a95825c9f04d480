"""Unary calls: GetNode and ListNodes (filtered, one page) against a controller with 10,000
nodes registered, paced at 500 and 1,000 req/s (open loop: requests leave on schedule whether or
not earlier ones returned; latency counts from the scheduled time) and at saturation (closed
loop, `--concurrency` calls in flight per client process).

Every window is measured twice in a row, against the controller and against the floor: a bare
grpc.aio server with the same stubs that parses the same request and answers a node
(`bare_grpc.py`), with the same client, pacing, metadata and run. Each controller figure is
reported as a ratio to the floor's (server CPU per call, p50, p99), and ListNodes' CPU per call
as a ratio to GetNode's.

    python scripts/bench/unary.py --nodes 10000 --rates 500 1000 --duration-s 10 --runs 3

The calls carry an admin bearer token, as an operator's would (the controller's default is
`--auth jwt`; `--auth off` measures without authentication). The bare server gets the same
header and ignores it."""

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
from typing import Any

import common
import fleet
import report
import streams
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio

LIST_FILTER = 'provider = "fly" AND region = "us-east-1"'
CALLS = ("GetNode", "ListNodes")


@dataclass(frozen=True)
class UnarySpec:
    address: str
    metadata: tuple[tuple[str, str], ...] | None
    node_ids: list[str]
    call: str
    rate: float  # paced requests/s of this client process; 0: closed loop
    concurrency: int
    connections: int
    seed: int


def _caller(stub: Any, spec: UnarySpec, rng: random.Random) -> Callable[[], Awaitable[Any]]:
    ids = spec.node_ids
    if spec.call == "GetNode":
        return lambda: stub.GetNode(
            ns.GetNodeRequest(node_id=rng.choice(ids)), metadata=spec.metadata, timeout=10
        )
    request = ns.ListNodesRequest(filter=LIST_FILTER)
    return lambda: stub.ListNodes(request, metadata=spec.metadata, timeout=10)


def worker_main(spec: UnarySpec, conn: Connection) -> None:
    try:
        asyncio.run(_worker(spec, conn))
    finally:
        conn.close()


async def _worker(spec: UnarySpec, conn: Connection) -> None:
    rng = random.Random(spec.seed)
    channels = [
        aio.insecure_channel(spec.address, options=streams.CHANNEL_OPTIONS)
        for _ in range(spec.connections)
    ]
    calls = [_caller(nsg.NodeServiceStub(c), spec, rng) for c in channels]
    latencies = array.array("d")
    errors = 0
    window = [float("inf"), float("inf")]
    inflight: set[asyncio.Task[None]] = set()

    async def one(call: Callable[[], Awaitable[Any]], scheduled: float) -> None:
        nonlocal errors
        try:
            await call()
        except aio.AioRpcError:
            if window[0] <= scheduled < window[1]:
                errors += 1
            return
        if window[0] <= scheduled < window[1]:
            latencies.append(time.monotonic() - scheduled)

    async def paced() -> None:
        step = 1.0 / spec.rate
        next_at = time.monotonic()
        i = 0
        while True:
            next_at += step
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(calls[i % len(calls)], next_at))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            i += 1

    async def closed(call: Callable[[], Awaitable[Any]]) -> None:
        while True:
            await one(call, time.monotonic())

    loops = (
        [asyncio.create_task(paced())]
        if spec.rate
        else [asyncio.create_task(closed(calls[i % len(calls)])) for i in range(spec.concurrency)]
    )
    loop = asyncio.get_running_loop()
    conn.send(("ready",))
    try:
        message = await loop.run_in_executor(None, conn.recv)
        if message[0] == "window":
            window[:] = [message[1], message[2]]
            await asyncio.sleep(max(0.0, window[1] - time.monotonic()) + 1.0)
    finally:
        for task in [*loops, *inflight]:
            task.cancel()
        await asyncio.gather(*loops, *inflight, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.close(None) for c in channels)), 10)
    await loop.run_in_executor(None, conn.send, ("result", errors, latencies.tobytes()))


def run_window(
    server: common.Server,
    node_ids: list[str],
    call: str,
    rate: float,
    *,
    workers: int,
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> dict[str, Any]:
    """One measured window of `call`, paced at `rate` req/s in all (0: saturated), each call
    with `metadata` (default: the server's own token, if any)."""
    ctx = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        for i in range(workers):
            parent_end, child_end = ctx.Pipe()
            spec = UnarySpec(
                server.address,
                metadata if metadata is not None else server.metadata,
                node_ids,
                call,
                rate / workers,
                concurrency,
                4,
                i,
            )
            child = ctx.Process(target=worker_main, args=(spec, child_end), daemon=True)
            child.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(child)
        for p in pipes:
            streams.expect(p, "ready", time.monotonic() + 120, server)
        start = time.monotonic() + warmup_s
        end = start + duration_s
        for p in pipes:
            p.send(("window", start, end))
        pids = [p.pid for p in procs if p.pid is not None]
        streams.sleep_until(start)
        server_cpu0, client_cpu0 = common.cpu_seconds(server.pid), common.cpu_of(pids)
        streams.sleep_until(end)
        server_cpu = common.cpu_seconds(server.pid) - server_cpu0
        client_cpu = common.cpu_of(pids) - client_cpu0
        results = [streams.expect(p, "result", end + 60, server) for p in pipes]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        for p in pipes:
            p.close()
    latencies = array.array("d")
    errors = 0
    for _, errs, raw in results:
        latencies.frombytes(raw)
        errors += errs
    ordered = sorted(latencies)
    done = len(ordered)
    return {
        "requests_per_s": round(done / duration_s, 1),
        "p50_ms": round(common.percentile(ordered, 0.5) * 1000, 3),
        "p99_ms": round(common.percentile(ordered, 0.99) * 1000, 3),
        "p999_ms": round(common.percentile(ordered, 0.999) * 1000, 3),
        "server_cpu_pct": round(server_cpu / duration_s * 100, 1),
        "server_cpu_us_per_call": round(server_cpu / done * 1e6, 1) if done else float("nan"),
        "client_cpu_pct": round(client_cpu / duration_s * 100, 1),
        "errors": errors,
        "load_average_1m": common.load_average()[0],
    }


def idle_cpu_pct(server: common.Server, seconds: float = 10.0) -> float:
    """The server's CPU while nobody calls it (background loops: health monitor, scheduler)."""
    time.sleep(2.0)
    cpu0 = common.cpu_seconds(server.pid)
    time.sleep(seconds)
    return round((common.cpu_seconds(server.pid) - cpu0) / seconds * 100, 1)


def load_name(rate: float) -> str:
    """The key of a load in the results: `paced_500` for 500 req/s, `saturated` for 0."""
    return f"paced_{rate:g}" if rate else "saturated"


def unary(
    nodes: int,
    rates: Sequence[float],
    runs: int,
    *,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    workers: int = 2,
    concurrency: int = 16,
    server_args: Sequence[str] = (),
    baseline: bool = True,
    event_loop: str = "auto",
) -> dict[str, Any]:
    """Every call at every load, `runs` windows each, on one controller with `nodes` nodes;
    with `baseline`, each window again on the bare grpc.aio server right after, and the ratios."""
    result: dict[str, Any] = {
        "nodes": nodes,
        "rates": list(rates),
        "filter": LIST_FILTER,
        "server_args": list(server_args),
        "event_loop": resolve_loop(event_loop),
        "calls": {},
    }
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(common.workdir("unary"))
        loop = result["event_loop"]  # both servers on the same loop
        server = stack.enter_context(common.controller(tmp, [*server_args, "--event-loop", loop]))
        bare = stack.enter_context(common.bare_grpc(tmp, event_loop=loop)) if baseline else None
        started = time.perf_counter()
        ids, _ = asyncio.run(fleet.register_nodes(server.address, nodes, server.metadata))
        common.log(f"unary: registered {nodes} nodes in {time.perf_counter() - started:.1f}s")
        result["authenticated"] = bool(server.token)
        result["idle_cpu_pct"] = idle_cpu_pct(server)
        result["rss_mb"] = round(common.rss_mb(server.pid), 1)
        common.log(f"unary: idle with {nodes} nodes: {result['idle_cpu_pct']:.1f}% CPU")
        if bare is not None:
            result["baseline"] = {}
            result["ratios"] = {}

        def window(target: common.Server, call: str, rate: float) -> dict[str, Any]:
            return run_window(
                target,
                ids,
                call,
                rate,
                workers=workers,
                concurrency=concurrency,
                duration_s=duration_s,
                warmup_s=warmup_s,
                metadata=server.metadata,  # the same header to both servers
            )

        for call in CALLS:
            result["calls"][call] = {}
            for rate in (*rates, 0.0):
                load = load_name(rate)
                ours, theirs = [], []
                for run in range(runs):
                    ours.append(window(server, call, rate))
                    _log(call, load, run, runs, "controller", ours[-1])
                    if bare is not None:
                        theirs.append(window(bare, call, rate))
                        _log(call, load, run, runs, "bare", theirs[-1])
                result["calls"][call][load] = _summary(ours)
                if bare is not None:
                    result["baseline"].setdefault(call, {})[load] = _summary(theirs)
                    result["ratios"].setdefault(call, {})[load] = ratios(
                        result["calls"][call][load], result["baseline"][call][load]
                    )
        result["list_vs_get"] = {
            load: common.ratio(
                result["calls"]["ListNodes"][load]["server_cpu_us_per_call"],
                result["calls"]["GetNode"][load]["server_cpu_us_per_call"],
            )
            for load in result["calls"]["GetNode"]
        }
    return result


def resolve_loop(choice: str) -> str:
    """`choice` as the controller resolves it ("auto": uvloop when installed), for both."""
    from controller.event_loop import resolve

    return resolve(choice)


def ratios(ours: dict[str, Any], floor: dict[str, Any]) -> dict[str, float]:
    """The controller's figures over the bare server's (medians over the runs)."""
    return {
        "cpu_per_call": common.ratio(
            ours["server_cpu_us_per_call"], floor["server_cpu_us_per_call"]
        ),
        "p50": common.ratio(ours["p50_ms"], floor["p50_ms"]),
        "p99": common.ratio(ours["p99_ms"], floor["p99_ms"]),
        "requests_per_s": common.ratio(ours["requests_per_s"], floor["requests_per_s"]),
    }


def _summary(windows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = common.aggregate(windows)
    summary["per_run"] = windows
    return summary


def _log(call: str, load: str, run: int, runs: int, side: str, w: dict[str, Any]) -> None:
    common.log(
        f"unary: {call} {load} run {run + 1}/{runs} {side}: "
        f"{w['requests_per_s']:.0f} req/s, p50 {w['p50_ms']:.2f} ms, "
        f"p99 {w['p99_ms']:.2f} ms, server {w['server_cpu_pct']:.0f}% CPU "
        f"({w['server_cpu_us_per_call']:.0f} us/call), "
        f"client {w['client_cpu_pct']:.0f}% CPU, errors {w['errors']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[500.0, 1000.0], help="paced requests/s in all"
    )
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="client processes")
    parser.add_argument("--concurrency", type=int, default=16, help="saturated: per process")
    parser.add_argument("--auth", choices=("jwt", "off"), default="jwt")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare grpc.aio floor")
    parser.add_argument(
        "--event-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="both servers' loop (auto: uvloop when installed, as the controller's default)",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    result = unary(
        args.nodes,
        args.rates,
        args.runs,
        duration_s=args.duration_s,
        workers=args.workers,
        concurrency=args.concurrency,
        server_args=["--auth", args.auth],
        baseline=not args.no_baseline,
        event_loop=resolve_loop(args.event_loop),
    )
    print(report.unary_table(result))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "unary": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
