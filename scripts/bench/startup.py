"""Start-up: the time from exec of `python -m controller serve` to the first grpc.health.v1
Check that answers SERVING (the poller connects from before the exec, so its own start is not
counted), median of `--runs`; and the idle RSS a moment later.

    python scripts/bench/startup.py --runs 10
    python scripts/bench/startup.py --runs 10 --nodes 50000     # a store holding a fleet

The first start on a new data dir also generates the signing and credential keys; it is reported
apart (`first_start_ms`). The measured starts reuse that data dir, as a restart would: its store
empty, or holding `--nodes` READY nodes written beforehand through the store's contract (one
transaction per 5,000, with the controller stopped, as after a restart with a live fleet).

The work tree is byte-compiled first, as an installed controller is (`compile_sources`).

The floor: each run also starts the bare grpc.aio server of the unary and stream benchmarks
(`bare_grpc.py`: grpc.aio, health, the NodeService and AgentService stubs, nothing of the
controller), in alternation with the controller (which one goes first alternates too),
measured the same way; the ratio of the medians says what the controller adds on this machine
at this load (`--no-baseline` skips it)."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import common
import report

BATCH = 5000  # nodes per transaction when filling the store


def anonymous_mb(pid: int) -> float:
    """The anonymous part of `pid`'s RSS, MiB (/proc/PID/smaps_rollup): the heaps, Python's
    objects and thread stacks; the rest of the RSS is pages of mapped files (the interpreter,
    gRPC core, cryptography's and other extensions' code), shared with every process that maps
    them."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Anonymous:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_once(
    tmp: Path, command: list[str], idle_s: float, log_name: str = "controller.log"
) -> tuple[float, float, float, float]:
    """Exec of `command` (which listens on port `{port}`) to SERVING in ms, the CPU it used to
    get there in ms (all its threads: less sensitive than the wall clock to a busy machine),
    and its RSS and the anonymous part of it in MB after `idle_s` of idling."""
    port = common.free_port()
    log_path = tmp / log_name
    with log_path.open("ab") as log:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [part.format(port=port) for part in command],
            cwd=common.ROOT,
            env=common.controller_env("info"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = common.Server(log_name, proc, f"127.0.0.1:{port}", log_path)
    try:
        common.wait_serving(server, 120)
        serving_ms = (time.perf_counter() - started) * 1000
        cpu_ms = common.cpu_seconds(proc.pid) * 1000
        time.sleep(idle_s)
        return serving_ms, cpu_ms, common.rss_mb(proc.pid), anonymous_mb(proc.pid)
    finally:
        common.stop_process(proc)


def compile_sources() -> None:
    """Byte-compiles the work tree, as `pip install` does for an installed controller: with
    PYTHONDONTWRITEBYTECODE set (as in the container image and on some machines) every start
    would otherwise compile the controller's and the generated modules from source."""
    folders = [str(common.ROOT / part) for part in ("controller", "generated", "sdk/python")]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *folders], check=True)


def controller_command(tmp: Path, args: Sequence[str]) -> list[str]:
    command = common.controller_command(0, tmp / "data", args)
    command[command.index("--port") + 1] = "{port}"
    return command


def bare_command() -> list[str]:
    return [sys.executable, str(common.BENCH_DIR / "bare_grpc.py"), "--port", "{port}"]


async def fill_store(data_dir: Path, count: int, beats: bool = False) -> float:
    """Writes `count` READY nodes (as fleet.py's, each with an id and times) into the store of
    `data_dir` through the store's contract, with `beats` a later heartbeat time recorded for
    each (`record_heartbeats`, as a running controller does); returns the seconds it took."""
    from controller.models import Capabilities, Node, NodeStatus
    from controller.store import open_store

    started = time.perf_counter()
    store = open_store(f"sqlite:///{data_dir / 'controller.db'}")
    await store.open()
    try:
        now = datetime.now(UTC)
        for first in range(0, count, BATCH):
            batch = [
                Node(
                    id=str(uuid.uuid4()),
                    provider=("fly", "aws", "gcp", "hetzner")[i % 4],
                    endpoint=f"https://sim-{i}.bench.invalid",
                    region=("us-east-1", "eu-west-1", "ap-south-1")[(i // 3) % 3],
                    capabilities=Capabilities(cpu_cores=4, memory_gb=8, disk_gb=50),
                    create_time=now,
                    update_time=now,
                    labels={"tier": ("web", "batch", "db")[(i // 12) % 3]},
                    status=NodeStatus.READY,
                    last_heartbeat_time=now,
                )
                for i in range(first, min(count, first + BATCH))
            ]
            await store.nodes.create_many([(node, None) for node in batch])
            if beats:
                later = now + timedelta(seconds=5)
                await store.record_heartbeats({node.id: later for node in batch})
    finally:
        await store.close()
    return time.perf_counter() - started


def startup(
    runs: int,
    *,
    idle_s: float = 2.0,
    server_args: Sequence[str] = (),
    nodes: int = 0,
    beats: bool = False,
    baseline: bool = True,
) -> dict[str, Any]:
    with common.workdir("startup") as tmp:
        ours = controller_command(tmp, server_args)
        compile_sources()
        first_ms, _, _, _ = start_once(tmp, ours, 0.0)
        fill_s = asyncio.run(fill_store(tmp / "data", nodes, beats)) if nodes else 0.0
        if nodes:
            common.log(f"startup: {nodes:,} nodes written in {fill_s:.1f} s")
        times, cpu, rss, anon = [], [], [], []
        bare_times, bare_cpu, bare_rss, bare_anon = [], [], [], []
        for run in range(runs):
            order = [False, True] if run % 2 else [True, False]
            for bare in order if baseline else [False]:
                if bare:
                    ms, cpu_ms, mb, anon_mb = start_once(tmp, bare_command(), idle_s, "bare.log")
                    bare_times.append(ms)
                    bare_cpu.append(cpu_ms)
                    bare_rss.append(mb)
                    bare_anon.append(anon_mb)
                else:
                    ms, cpu_ms, mb, anon_mb = start_once(tmp, ours, idle_s)
                    times.append(ms)
                    cpu.append(cpu_ms)
                    rss.append(mb)
                    anon.append(anon_mb)
            floor = f" (bare grpc.aio {bare_times[-1]:.0f} ms)" if baseline else ""
            common.log(
                f"startup: run {run + 1}/{runs}: SERVING after {times[-1]:.0f} ms{floor}, "
                f"CPU {cpu[-1]:.0f} ms, {rss[-1]:.1f} MB"
            )
    result: dict[str, Any] = {
        "runs": runs,
        "nodes": nodes,
        "exec_to_serving_ms": {k: round(v, 1) for k, v in common.spread(times).items()},
        "cpu_to_serving_ms": {k: round(v, 1) for k, v in common.spread(cpu).items()},
        "idle_rss_mb": {k: round(v, 1) for k, v in common.spread(rss).items()},
        "idle_anonymous_mb": {k: round(v, 1) for k, v in common.spread(anon).items()},
        "first_start_ms": round(first_ms, 1),
        "idle_s": idle_s,
        "per_run": [
            {"exec_to_serving_ms": t, "idle_rss_mb": m} for t, m in zip(times, rss, strict=True)
        ],
        "load_average_1m": common.load_average()[0],
    }
    if baseline:
        result["bare"] = {
            "exec_to_serving_ms": {k: round(v, 1) for k, v in common.spread(bare_times).items()},
            "cpu_to_serving_ms": {k: round(v, 1) for k, v in common.spread(bare_cpu).items()},
            "idle_rss_mb": {k: round(v, 1) for k, v in common.spread(bare_rss).items()},
            "idle_anonymous_mb": {k: round(v, 1) for k, v in common.spread(bare_anon).items()},
        }
        result["ratio_to_bare"] = round(
            common.ratio(result["exec_to_serving_ms"], result["bare"]["exec_to_serving_ms"]), 2
        )
        result["cpu_ratio_to_bare"] = round(
            common.ratio(result["cpu_to_serving_ms"], result["bare"]["cpu_to_serving_ms"]), 2
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=0, help="nodes in the store (default 0)")
    parser.add_argument(
        "--recorded-heartbeats",
        action="store_true",
        help="record a heartbeat time for every node after writing it (a live fleet's store)",
    )
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle time before the RSS")
    parser.add_argument("--no-baseline", action="store_true", help="skip bare grpc.aio")
    parser.add_argument("--json", type=Path)
    parser.add_argument("server_args", nargs="*", help="after --: the controller's flags")
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    result = startup(
        args.runs,
        idle_s=args.idle_s,
        server_args=args.server_args,
        nodes=args.nodes,
        beats=args.recorded_heartbeats,
        baseline=not args.no_baseline,
    )
    print(report.startup_table(result))
    anon = [("controller", result)] + ([("bare", result["bare"])] if "bare" in result else [])
    # The anonymous part of the idle RSS (heaps, objects, stacks); the rest is mapped files.
    print(
        "idle RSS anonymous MB (median): "
        + ", ".join(f"{name} {r['idle_anonymous_mb']['median']:.1f}" for name, r in anon)
    )
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "startup": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
