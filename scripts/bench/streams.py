"""The load generator behind every stream scenario: N long-lived bidirectional streams spread
over several client processes and many connections, each stream beating either on a schedule
(paced) or as soon as its previous beat is acknowledged (closed loop).

What a stream speaks is a `Driver` (the controller's Heartbeat, etcd's LeaseKeepAlive), named as
"module:Class" so that each spawned client process builds its own. The client is the same for
every server, so that the comparison is between the servers.

    parent                              client process (one of --workers)
    ------                              ---------------------------------
    spawn(idents slice) --------------> open M channels, open its streams
                        <-------------- ("opened", ...)       streams start beating
    (all opened + warmup)
    ("window", start, end) -----------> records beats scheduled in [start, end)
    samples /proc at start and end
                        <-------------- ("result", counts, latencies)    at end + grace

Latency is measured from the time a beat was *scheduled* to the time its ack arrived, so a server
that stalls shows up in the percentiles instead of silently slowing the senders (no coordinated
omission). Every client process is joined, and killed if it does not end in time."""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import importlib
import multiprocessing
import random
import resource
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

import common
import grpc
from fleet_run import FleetRun as FleetRun  # re-exported: the benches name streams.*
from fleet_run import Settings as Settings
from fleet_run import sleep_until as sleep_until
from fleet_run import summarize as summarize
from grpc import aio
from pacer import Pacer

# Several channels to one address share one TCP connection unless each has its own subchannel
# pool; a fleet of agents has one connection each (or a few per client process here).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


# The end-of-stream sentinel of `read()`; grpc-stubs does not declare it.
EOF: Any = aio.EOF  # type: ignore[attr-defined]


class StreamEndedError(Exception):
    """The server ended the stream (EOF, a Reconnect, an expired lease)."""


class Stream(Protocol):
    async def open(self) -> None:
        """Opens the stream and completes its handshake."""

    async def beat(self) -> None:
        """Sends one beat and returns when it is acknowledged."""

    def cancel(self) -> None: ...


class Driver(Protocol):
    def stream(self, channel: aio.Channel, ident: str, token: str) -> Stream: ...


@dataclass(frozen=True)
class WorkerSpec:
    driver: str  # "module:Class"
    driver_args: dict[str, Any]
    address: str
    idents: list[str]
    tokens: list[str]
    settings: Settings
    seed: int


@dataclass
class _Tally:
    open_now: int = 0
    opened_total: int = 0
    errors: int = 0
    reconnects: int = 0
    sent_in_window: int = 0
    acked_in_window: int = 0
    latencies: array.array[float] = field(default_factory=lambda: array.array("d"))
    window: tuple[float, float] = (float("inf"), float("inf"))
    error_kinds: dict[str, int] = field(default_factory=dict)

    def in_window(self, t: float) -> bool:
        return self.window[0] <= t < self.window[1]

    def latency(self, seconds: float) -> None:
        self.latencies.append(seconds)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        kind = exc.code().name if isinstance(exc, grpc.RpcError) else type(exc).__name__
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1


def load_driver(spec: str, args: dict[str, Any]) -> Driver:
    module, _, name = spec.partition(":")
    driver: Driver = getattr(importlib.import_module(module), name)(**args)
    return driver


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of one client process."""
    try:
        asyncio.run(_worker(spec, conn))
    finally:
        conn.close()


async def _worker(spec: WorkerSpec, conn: Connection) -> None:
    s = spec.settings
    rng = random.Random(spec.seed)
    driver = load_driver(spec.driver, spec.driver_args)
    connections = max(1, -(-len(spec.idents) // s.streams_per_connection))
    channels = [
        aio.insecure_channel(spec.address, options=CHANNEL_OPTIONS) for _ in range(connections)
    ]
    streams = [
        driver.stream(channels[i % connections], ident, spec.tokens[i] if spec.tokens else "")
        for i, ident in enumerate(spec.idents)
    ]
    tally = _Tally()
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(s.open_concurrency)
    started = time.monotonic()

    async def open_one(stream: Stream) -> bool:
        async with gate:
            try:
                await asyncio.wait_for(stream.open(), 60)
            except (grpc.RpcError, StreamEndedError, TimeoutError) as exc:
                tally.error(exc)
                return False
            tally.open_now += 1
            tally.opened_total += 1
            return True

    # Opening is bounded: streams not open by the deadline are left out of the run (and
    # reported), so that a server that opens streams slowly still gets measured.
    opening = [asyncio.create_task(open_one(st)) for st in streams]
    await asyncio.wait(opening, timeout=s.open_timeout_s)
    for pending in opening:
        pending.cancel()
    await asyncio.gather(*opening, return_exceptions=True)
    opened = [t.done() and not t.cancelled() and t.result() for t in opening]
    conn.send(("opened", sum(opened), len(opened) - sum(opened), time.monotonic() - started))
    held = [st for st, ok in zip(streams, opened, strict=True) if ok]
    if s.mode == "paced":  # one timer drives them all (pacer.py)
        paced = Pacer(held, s.interval_s, tally, rng, (StreamEndedError,))
        tasks = [asyncio.create_task(paced.run())]
    else:  # closed loop: each stream beats as soon as its last beat is acked
        tasks = [asyncio.create_task(_run_closed(st, s, tally)) for st in held]
    open_at_end = 0
    try:
        message = await loop.run_in_executor(None, conn.recv)
        if message[0] != "window":
            return
        tally.window = (message[1], message[2])
        await asyncio.sleep(max(0.0, tally.window[1] - time.monotonic()))
        open_at_end = tally.open_now
        await asyncio.sleep(s.grace_s)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in streams:
            st.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(c.close(None) for c in channels)), 10)
    result = {
        "open_at_end": open_at_end,
        "opened_total": tally.opened_total,
        "errors": tally.errors,
        "error_kinds": tally.error_kinds,
        "reconnects": tally.reconnects,
        "sent_in_window": tally.sent_in_window,
        "acked_in_window": tally.acked_in_window,
    }
    await loop.run_in_executor(None, conn.send, ("result", result, tally.latencies.tobytes()))


async def _run_closed(stream: Stream, s: Settings, tally: _Tally) -> None:
    """Beats as soon as the last beat is acked, until cancelled; reopens the stream (after a
    jittered pause) when it breaks."""
    is_open = True
    while True:
        if not is_open:
            await asyncio.sleep(random.uniform(0.5, 1.5))
            try:
                await asyncio.wait_for(stream.open(), 60)
            except (grpc.RpcError, StreamEndedError, TimeoutError) as exc:
                tally.error(exc)
                continue
            is_open = True
            tally.open_now += 1
            tally.reconnects += 1
        scheduled = time.monotonic()
        counted = tally.in_window(scheduled)
        if counted:
            tally.sent_in_window += 1
        try:
            await stream.beat()
        except (grpc.RpcError, StreamEndedError) as exc:
            tally.error(exc)
            tally.open_now -= 1
            is_open = False
            stream.cancel()
            continue
        if counted:
            tally.acked_in_window += 1
            tally.latencies.append(time.monotonic() - scheduled)


# The parent side


def split(items: Sequence[str], parts: int) -> list[list[str]]:
    return [list(items[i::parts]) for i in range(parts) if items[i::parts]]


def run_fleet(
    server: common.Server,
    driver: str,
    driver_args: dict[str, Any],
    idents: Sequence[str],
    tokens: Sequence[str],
    settings: Settings,
    baseline_rss_mb: float,
    protocol: str = "",
) -> FleetRun:
    """Runs the fleet against `server` once and measures it. `baseline_rss_mb` is the server's RSS
    before any stream was opened (after registration), for RSS per stream. With
    `settings.client == "cpp"` the compiled client runs the streams (speaking `protocol`)."""
    if settings.client == "cpp":
        import cppclient

        return cppclient.run_fleet(server, protocol, idents, tokens, settings, baseline_rss_mb)
    ctx = multiprocessing.get_context("spawn")  # never fork a process that has used gRPC
    slices = split(idents, settings.workers)
    token_slices = split(tokens, settings.workers) if tokens else [[] for _ in slices]
    pipes: list[Connection] = []
    procs: list[multiprocessing.process.BaseProcess] = []
    deadline = time.monotonic() + settings.open_timeout_s + 120  # spawning, channels
    try:
        for i, (part, part_tokens) in enumerate(zip(slices, token_slices, strict=True)):
            parent_end, child_end = ctx.Pipe()
            spec = WorkerSpec(driver, driver_args, server.address, part, part_tokens, settings, i)
            child = ctx.Process(target=worker_main, args=(spec, child_end), daemon=True)
            child.start()
            child_end.close()
            pipes.append(parent_end)
            procs.append(child)
        opened = [expect(p, "opened", deadline, server) for p in pipes]
        run = FleetRun(streams_open=sum(m[1] for m in opened), open_s=max(m[3] for m in opened))
        start = time.monotonic() + settings.warmup_s
        end = start + settings.duration_s
        for p in pipes:
            p.send(("window", start, end))
        pids = [p.pid for p in procs if p.pid is not None]
        sleep_until(start)
        server_cpu0, client_cpu0 = common.cpu_seconds(server.pid), common.cpu_of(pids)
        wall0 = time.time()
        sleep_until(end)
        run.window_wall = (wall0, time.time())
        server_cpu = common.cpu_seconds(server.pid) - server_cpu0
        client_cpu = common.cpu_of(pids) - client_cpu0
        run.server_rss_mb = common.rss_mb(server.pid)
        results = [expect(p, "result", end + settings.grace_s + 60, server) for p in pipes]
    finally:
        for p in pipes:
            with contextlib.suppress(OSError):
                p.send(("stop",))
        for proc in procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()
                proc.join(10)
        for p in pipes:
            p.close()
    latencies = array.array("d")
    for _, _, raw in results:
        latencies.frombytes(raw)
    return summarize(
        run,
        [counts for _, counts, _ in results],
        latencies,
        settings,
        (server_cpu, client_cpu),
        baseline_rss_mb,
    )


def expect(pipe: Connection, kind: str, deadline: float, server: common.Server) -> Any:
    """The next message of `kind` from a client process, waiting until `deadline`."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"a client process sent no {kind!r} in time")
        if not server.alive():
            raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
        if wait([pipe], min(left, 1.0)):
            try:
                message = pipe.recv()
            except EOFError:
                raise RuntimeError(f"a client process ended before {kind!r}") from None
            if message[0] == kind:
                return message


# Scenarios: one target (a server and how to prepare it), several runs


@dataclass
class Prepared:
    """What a target's preparation made: one ident (node id, lease id) per stream."""

    idents: list[str]
    tokens: list[str]
    driver_args: dict[str, Any]
    seconds: float


@dataclass(frozen=True)
class Target:
    """A server under test: `session(workdir, n)` starts it, prepares `n` idents (nodes, leases)
    and yields both; it stops the server on exit."""

    name: str
    driver: str  # "module:Class", built in each client process
    session: Callable[[Path, int], AbstractContextManager[tuple[common.Server, Prepared]]]
    protocol: str = ""  # what the compiled client speaks ("controller", "etcd"); default: name


def measure(
    target: Target, agents: int, settings: Settings, runs: int, *, gc_stats: bool = False
) -> dict[str, Any]:
    """`runs` fresh runs (a new server each time, with fresh data) of `agents` streams; the
    median, min and max of each figure, and each run's figures under `per_run`. `gc_stats`: the
    server logs its long garbage collections (gcstats.py); their count and length in the window
    are added."""
    results: list[dict[str, Any]] = []
    raise_open_files_limit()
    if settings.client == "cpp":
        import cppclient

        cppclient.binary()  # built (once per source change) before any server starts
    for run in range(runs):
        common.log(f"{target.name}: {settings.mode} {agents} streams, run {run + 1}/{runs}")
        with common.workdir(target.name) as tmp, target.session(tmp, agents) as (server, prep):
            common.log(f"  prepared {agents} in {prep.seconds:.1f}s")
            time.sleep(1.0)  # let the preparation's garbage settle before the baseline
            baseline = common.rss_mb(server.pid)
            fleet = run_fleet(
                server,
                target.driver,
                prep.driver_args,
                prep.idents,
                prep.tokens,
                settings,
                baseline,
                target.protocol or target.name,
            )
            if gc_stats:
                pauses = common.gc_pauses(server.log_path, *fleet.window_wall)
        result = fleet.as_dict()
        del result["window_wall"]
        if gc_stats:
            result.update(pauses)
        result["streams_wanted"] = agents
        result["prepared_rss_mb"] = round(baseline, 1)
        result["prepare_per_s"] = round(agents / max(prep.seconds, 1e-9), 1)
        result["load_average_1m"] = common.load_average()[0]
        common.log(
            f"  {result['streams_open']} open in {result['open_s']:.1f}s, "
            f"{result['beats_per_s']:.0f} beats/s, p99 {result['ack_p99_ms']:.1f} ms, "
            f"server {result['server_cpu_pct']:.0f}% CPU {result['server_rss_mb']:.0f} MB, "
            f"client {result['client_cpu_pct']:.0f}% CPU ({settings.client}), "
            f"errors {result['errors']}"
        )
        results.append(result)
    summary = common.aggregate(results)
    summary["error_kinds"] = _merge_kinds(r["error_kinds"] for r in results)
    summary.update(target=target.name, agents=agents, mode=settings.mode)
    summary["settings"] = vars(settings).copy()
    summary["client"] = settings.client
    summary["per_run"] = results
    return summary


def raise_open_files_limit() -> None:
    """Lifts this process's soft limit of open files to its hard limit, for the servers and
    clients it starts (one descriptor per connection on each side: 50,000 streams at 50 per
    connection are 1,000 connections). Not lifted: the ~28,000 ephemeral ports of one source
    address towards one server address, which bound the connections (not the streams)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _merge_kinds(kinds: Iterable[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for k in kinds:
        for name, n in k.items():
            merged[name] = merged.get(name, 0) + n
    return merged


def ratios(ours: dict[str, Any], anchor: dict[str, Any]) -> dict[str, float]:
    """Ours / anchor for the figures the issue compares (below 1 is better for all but beats/s)."""
    return {
        "cpu_per_beat": common.ratio(
            ours.get("server_cpu_us_per_beat"), anchor.get("server_cpu_us_per_beat")
        ),
        "rss_per_stream": common.ratio(
            ours.get("rss_per_stream_kb"), anchor.get("rss_per_stream_kb")
        ),
        "ack_p99": common.ratio(ours.get("ack_p99_ms"), anchor.get("ack_p99_ms")),
        "beats_per_s": common.ratio(ours.get("beats_per_s"), anchor.get("beats_per_s")),
    }


def add_fleet_arguments(parser: argparse.ArgumentParser, *, interval_s: float) -> None:
    parser.add_argument("--agents", type=int, nargs="+", default=[1000], help="one run set per N")
    parser.add_argument("--interval-s", type=float, default=interval_s)
    parser.add_argument("--duration-s", type=float, default=20.0, help="the measured window")
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=3, help="client processes")
    parser.add_argument("--streams-per-connection", type=int, default=50)
    parser.add_argument("--no-anchor", action="store_true", help="skip etcd")
    parser.add_argument(
        "--restored",
        action="store_true",
        help="controller: mark the fleet READY and restart before the streams open",
    )
    parser.add_argument("--open-timeout-s", type=float, default=300.0)
    parser.add_argument(
        "--gc-stats", action="store_true", help="log the controller's long garbage collections"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    add_client_arguments(parser)


def add_floor_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--floor", action="store_true", help="also measure the bare grpc.aio server (bare_grpc.py)"
    )


def add_client_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client",
        choices=("python", "cpp"),
        help="the load client: the compiled one (cppclient.py; default where its toolchain is "
        "installed) or the Python one (spawned processes, --workers)",
    )
    parser.add_argument("--cpp-threads", type=int, default=2, help="the compiled client's threads")
    parser.add_argument(
        "--cpp-streams-per-connection", type=int, default=500, help="the compiled client's"
    )


def client_of(args: argparse.Namespace) -> str:
    """The client asked for, or the compiled one where it can be built."""
    if args.client:
        return str(args.client)
    import cppclient

    return cppclient.default_client()


def settings_from(args: argparse.Namespace, mode: str) -> Settings:
    return Settings(
        mode=mode,
        interval_s=args.interval_s,
        duration_s=args.duration_s,
        warmup_s=args.warmup_s,
        workers=args.workers,
        streams_per_connection=args.streams_per_connection,
        open_timeout_s=args.open_timeout_s,
        client=client_of(args),
        cpp_threads=args.cpp_threads,
        cpp_streams_per_connection=args.cpp_streams_per_connection,
    )
