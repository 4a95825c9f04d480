"""RegisterNode while watchers replay the change log (issue 9, item 3): p50/p99 of a paced
RegisterNode (open loop: latency counts from the scheduled time) with no watchers, then with
`--watchers` WatchNodes calls that resume over and over, on a controller whose change log holds
`--changes` registrations: from revision 1 (`--resume first`: a RESET and the state, about
`--changes` nodes) or from as far back as a replay reads the log (`--resume log`: ~10,000 rows
read, page by page, and as many nodes sent).

    python scripts/bench/replay.py --changes 10000 --watchers 100 --duration-s 15 --runs 3

`--gc-stats` counts the controller's collections over 20 ms (gcstats.py); `--profile out.svg`
(or `.txt`, collapsed stacks) records each window with watchers with py-spy, if installed.

The watchers read their streams as raw bytes (a SYNCED message is the only short one), so the
client processes spend little CPU: on a small machine they would otherwise take it from the
server. Their token is the bench's admin token, within its stream limit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import common
import fleet
import streams
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio

WATCH_NODES = "/automator67.v1.NodeService/WatchNodes"
SHORT = 32  # bytes: a WatchNodesResponse without a node (SYNCED, RESET) is shorter
WARMUP_S = 3.0
MAX_REPLAY = 10_000  # controller.api.watch.MAX_REPLAY: further behind, a watch gets the state


@dataclass(frozen=True)
class WatcherSpec:
    address: str
    metadata: tuple[tuple[str, str], ...] | None
    watchers: int
    start_revision: int = 1


def watcher_main(spec: WatcherSpec, conn: Connection) -> None:
    try:
        asyncio.run(_watchers(spec, conn))
    finally:
        conn.close()


async def _watchers(spec: WatcherSpec, conn: Connection) -> None:
    """`spec.watchers` loops, each: WatchNodes from `spec.start_revision`, read up to SYNCED,
    cancel."""
    channels = [aio.insecure_channel(spec.address, options=streams.CHANNEL_OPTIONS) for _ in "ab"]
    request = ns.WatchNodesRequest(start_revision=spec.start_revision).SerializeToString()
    tally = {"replays": 0, "messages": 0, "errors": 0}

    async def replaying(channel: aio.Channel) -> None:
        watch = channel.unary_stream(WATCH_NODES, None, None)  # raw bytes: nothing parsed
        while True:
            call = watch(request, metadata=spec.metadata)
            try:
                async for raw in call:
                    tally["messages"] += 1
                    if len(raw) < SHORT and ns.WatchNodesResponse.FromString(raw).type == (
                        ns.NODE_EVENT_TYPE_SYNCED
                    ):
                        tally["replays"] += 1
                        break
            except aio.AioRpcError:
                tally["errors"] += 1
                await asyncio.sleep(0.1)
            finally:
                call.cancel()

    tasks = [asyncio.create_task(replaying(channels[i % 2])) for i in range(spec.watchers)]
    loop = asyncio.get_running_loop()
    conn.send(("ready",))
    try:
        await loop.run_in_executor(None, conn.recv)  # "stop"
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.close(None) for c in channels)), 10)
    await loop.run_in_executor(None, conn.send, ("result", tally))


async def paced_registrations(
    server: common.Server, rate: float, duration_s: float, first: int
) -> tuple[list[float], int]:
    """RegisterNode at `rate` per second for `duration_s`; latencies (s) from the schedule."""
    channel = aio.insecure_channel(server.address, options=streams.CHANNEL_OPTIONS)
    stub = nsg.NodeServiceStub(channel)
    latencies: list[float] = []
    errors = 0

    async def one(i: int, scheduled: float) -> None:
        nonlocal errors
        try:
            await stub.RegisterNode(
                ns.RegisterNodeRequest(node=fleet.node(i)), metadata=server.metadata, timeout=120
            )
        except aio.AioRpcError:
            errors += 1
            return
        latencies.append(time.monotonic() - scheduled)

    tasks = []
    start = time.monotonic()
    for i in range(int(rate * duration_s)):
        scheduled = start + i / rate
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        tasks.append(asyncio.create_task(one(first + i, scheduled)))
    await asyncio.gather(*tasks)
    await channel.close(None)
    return latencies, errors


def run_window(
    server: common.Server,
    watchers: int,
    rate: float,
    duration_s: float,
    first: int,
    profile: Path | None = None,
    start_revision: int = 1,
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    workers = min(2, watchers)
    pipes: list[Connection] = []
    procs: list[multiprocessing.process.BaseProcess] = []
    try:
        for i in range(workers):
            parent_end, child_end = ctx.Pipe()
            share = watchers // workers + (i < watchers % workers)
            spec = WatcherSpec(server.address, server.metadata, share, start_revision)
            child = ctx.Process(target=watcher_main, args=(spec, child_end), daemon=True)
            child.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(child)
        for p in pipes:
            streams.expect(p, "ready", time.monotonic() + 120, server)
        if watchers:
            time.sleep(WARMUP_S)  # every watcher is replaying
        cpu0, wall0 = common.cpu_seconds(server.pid), time.time()
        with py_spy(server.pid, duration_s, profile):
            latencies, errors = asyncio.run(paced_registrations(server, rate, duration_s, first))
        server_cpu = common.cpu_seconds(server.pid) - cpu0
        gc = common.gc_pauses(server.log_path, wall0, time.time())
        for p in pipes:
            p.send(("stop",))
        tallies = [streams.expect(p, "result", time.monotonic() + 60, server)[1] for p in pipes]
    finally:
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        for p in pipes:
            p.close()
    ordered = sorted(latencies)
    return {
        "watchers": watchers,
        "registrations": len(ordered),
        "p50_ms": round(common.percentile(ordered, 0.5) * 1000, 2),
        "p99_ms": round(common.percentile(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else float("nan"),
        "errors": errors,
        "replays_per_s": round(sum(t["replays"] for t in tallies) / duration_s, 1),
        "watch_messages_per_s": round(sum(t["messages"] for t in tallies) / duration_s, 0),
        "watch_errors": sum(t["errors"] for t in tallies),
        "server_cpu_pct": round(server_cpu / duration_s * 100, 1),
        "load_average_1m": common.load_average()[0],
        **gc,
    }


@contextlib.contextmanager
def py_spy(pid: int, duration_s: float, out: Path | None) -> Iterator[None]:
    """With `out`, `py-spy record` of the controller while the block runs: a flame graph (.svg)
    or collapsed stacks (any other suffix, e.g. .txt, for grep and sort)."""
    if out is None:
        yield
        return
    spy = Path(sys.executable).with_name("py-spy")
    cmd = [str(spy), "record", "--nonblocking", "--pid", str(pid), "--rate", "200"]
    cmd += ["--duration", str(int(duration_s)), "--output", str(out)]
    cmd += ["--format", "flamegraph" if out.suffix == ".svg" else "raw"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.wait(timeout=duration_s + 60)


def replay(
    changes: int,
    watchers: int,
    rate: float,
    duration_s: float,
    runs: int,
    *,
    gc_stats: bool = False,
    profile: Path | None = None,
    resume: str = "first",
) -> dict[str, Any]:
    """`resume`: "first", the watchers resume from revision 1 (once the store is more than
    `MAX_REPLAY` revisions on, each gets RESET and the state: ~`changes` ADDED nodes); "log",
    from as far back as the change log is replayed (each reads ~`MAX_REPLAY` rows of the log and
    sends the nodes they changed, CHANGED; set `changes` >= `MAX_REPLAY`).
    `gc_stats`: the controller runs through gcstats.py (its long collections are counted);
    `profile`: a py-spy profile of each window with watchers, `<profile stem>-<run><suffix>`."""
    args = ["--max-streams-per-principal", str(max(100, 2 * watchers))]
    result: dict[str, Any] = {"changes": changes, "rate": rate, "resume": resume, "windows": {}}
    with (
        common.workdir("replay") as tmp,
        common.controller(tmp, args, gc_stats=gc_stats) as server,
    ):
        started = time.perf_counter()
        asyncio.run(fleet.register_nodes(server.address, changes, server.metadata))
        common.log(f"replay: {changes} registrations in {time.perf_counter() - started:.1f}s")
        first = changes
        for count in (0, watchers):
            windows = []
            for run in range(runs):
                svg = None
                if profile is not None and count:
                    svg = profile.with_name(f"{profile.stem}-{run + 1}{profile.suffix}")
                start = 1
                if resume == "log":  # `first` is the store's revision: one per registration
                    ahead = int(rate * (duration_s + WARMUP_S + 5))
                    start = max(1, first + ahead - MAX_REPLAY)
                w = run_window(server, count, rate, duration_s, first, svg, start)
                first += w["registrations"] + w["errors"]
                common.log(
                    f"replay: {count} watchers run {run + 1}/{runs}: RegisterNode p50"
                    f" {w['p50_ms']:.1f} ms, p99 {w['p99_ms']:.1f} ms, max {w['max_ms']:.1f} ms;"
                    f" {w['replays_per_s']:.1f} replays/s, server {w['server_cpu_pct']:.0f}% CPU,"
                    f" load {w['load_average_1m']:.1f}, GC pauses >20 ms total"
                    f" {w['gc_pause_total_ms']:.0f} ms (max {w['gc_pause_max_ms']:.0f})"
                )
                windows.append(w)
            summary = common.aggregate(windows)
            summary["per_run"] = windows
            result["windows"][str(count)] = summary
    return result


def table(result: dict[str, Any]) -> str:
    headers = (
        "watchers",
        "RegisterNode p50 ms",
        "p99 ms",
        "max ms",
        "replays/s",
        "watch msgs/s",
        "server CPU %",
    )
    rows = [
        [
            watchers,
            common.fmt(w["p50_ms"], 1),
            common.fmt(w["p99_ms"], 1),
            common.fmt(w["max_ms"], 1),
            common.fmt(w["replays_per_s"], 1),
            common.fmt(w["watch_messages_per_s"], 0),
            common.fmt(w["server_cpu_pct"], 0),
        ]
        for watchers, w in result["windows"].items()
    ]
    return common.markdown_table(headers, rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--changes", type=int, default=10_000, help="registrations before")
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20.0, help="RegisterNode per second")
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--resume",
        choices=("first", "log"),
        default="first",
        help="watchers resume from revision 1 (a RESET and the state) or replay the change log",
    )
    parser.add_argument(
        "--gc-stats", action="store_true", help="count the controller's GC pauses over 20 ms"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy profiles of the windows with watchers (.svg, or .txt: collapsed)",
    )
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    result = replay(
        args.changes,
        args.watchers,
        args.rate,
        args.duration_s,
        args.runs,
        gc_stats=args.gc_stats,
        profile=args.profile,
        resume=args.resume,
    )
    print(table(result))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "replay": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
