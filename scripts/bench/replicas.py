"""Three replicas on one PostgreSQL (issue 10): how soon a write on one replica is visible on
another, and how soon a new leader leads after kill -9 of the old one.

Starts a PostgreSQL 15 of its own (as the tests do: initdb/pg_ctl as the `postgres` user, a
free port on 127.0.0.1), provisions shared keys, starts three controllers. Then:
- visibility: `--writes` CreateDeployment calls on replica 1, paced at `--rate`/s; replica 2's
  WatchDeployments timestamps each ADDED; latency = seen on 2 - acknowledged on 1 (negative
  values are possible: the feed can deliver before the writer's reply arrives). p50/p99/max;
- a fleet spread over the three: `--agents` heartbeat streams (AgentService, node tokens), a
  third on each replica, one beat every `--interval-s`, for `--window-s`: each replica's CPU
  per beat it acked;
- failover, `--kills` times: kill -9 the leader, time until both survivors name the same new
  leader in GetNodeStats; the killed replica is restarted before the next round.

    python scripts/bench/replicas.py --writes 500 --rate 50 --agents 600 --kills 3"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import common
import fleet
from automator67.v1 import deployment_pb2
from automator67.v1 import deployment_service_pb2 as dpb
from automator67.v1 import deployment_service_pb2_grpc as dsg
from automator67.v1 import node_service_pb2 as npb
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio

sys.path.insert(0, str(common.ROOT))
from tests.contract import postgres_server  # the tests' PostgreSQL launcher

LEASE_S = 3.0


def provision_keys(data_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "controller", "keys", "init", "--data-dir", str(data_dir)],
        cwd=common.ROOT,
        check=True,
        capture_output=True,
    )


@contextlib.contextmanager
def replica(work: Path, data_dir: Path, url: str, index: int) -> Iterator[common.Server]:
    args = ["--store-url", url, "--replica-id", f"r{index}", "--leader-lease-s", f"{LEASE_S}"]
    folder = work / f"r{index}"
    folder.mkdir(exist_ok=True)
    port = common.free_port()
    log_path = folder / "controller.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            common.controller_command(port, data_dir, args),
            cwd=common.ROOT,
            env=common.controller_env("info"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = common.Server(f"r{index}", proc, f"127.0.0.1:{port}", log_path)
    try:
        common.wait_serving(server, 60.0)
        server.token = common.admin_token(data_dir, args)
        yield server
    finally:
        common.stop_process(proc)


async def visibility(a: common.Server, b: common.Server, writes: int, rate: float) -> Any:
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    async with aio.insecure_channel(a.address) as ca, aio.insecure_channel(b.address) as cb:
        watch = dsg.DeploymentServiceStub(cb).WatchDeployments(
            dpb.WatchDeploymentsRequest(), metadata=b.metadata
        )
        async for event in watch:
            if event.type == dpb.DEPLOYMENT_EVENT_TYPE_SYNCED:
                break

        all_seen = asyncio.Event()

        async def follow() -> None:
            async for event in watch:
                if event.type == dpb.DEPLOYMENT_EVENT_TYPE_ADDED:
                    seen[event.deployment.name] = time.perf_counter()
                    if len(seen) >= writes:
                        all_seen.set()

        follower = asyncio.create_task(follow())
        stub = dsg.DeploymentServiceStub(ca)
        started = time.perf_counter()
        for i in range(writes):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            name = f"v{i}"
            await stub.CreateDeployment(
                dpb.CreateDeploymentRequest(
                    deployment=deployment_pb2.Deployment(name=name, image="x", replicas=0)
                ),
                metadata=a.metadata,
            )
            acked[name] = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_seen.wait(), 10)
        follower.cancel()
        watch.cancel()
    lags = sorted((seen[n] - acked[n]) * 1000 for n in acked if n in seen)
    return {
        "writes": writes,
        "seen": len(lags),
        "p50_ms": round(common.percentile(lags, 0.5), 2),
        "p99_ms": round(common.percentile(lags, 0.99), 2),
        "max_ms": round(lags[-1], 2) if lags else None,
    }


async def spread_fleet(
    servers: list[common.Server], agents: int, interval_s: float, window_s: float
) -> list[dict[str, Any]]:
    """`agents` streams, agent i on replica i % 3, beating every `interval_s`; per replica, the
    beats acked and the CPU it spent over `window_s`."""
    ids, tokens = await fleet.register_nodes(servers[0].address, agents, servers[0].metadata)
    channels = [aio.insecure_channel(s.address) for s in servers]
    driver = fleet.ControllerDriver()
    streams_ = [driver.stream(channels[i % 3], ids[i], tokens[i]) for i in range(agents)]
    await asyncio.gather(*(st.open() for st in streams_))
    acked = [0, 0, 0]
    stop = asyncio.Event()

    async def beat(i: int) -> None:
        await asyncio.sleep(interval_s * i / agents)  # spread over the interval
        while not stop.is_set():
            started = time.perf_counter()
            await streams_[i].beat()
            acked[i % 3] += 1
            await asyncio.sleep(max(0.0, interval_s - (time.perf_counter() - started)))

    beaters = [asyncio.create_task(beat(i)) for i in range(agents)]
    await asyncio.sleep(interval_s * 2)  # warm up
    before = [common.cpu_seconds(s.pid) for s in servers]
    counted = list(acked)
    await asyncio.sleep(window_s)
    cpu = [common.cpu_seconds(s.pid) - b for s, b in zip(servers, before, strict=True)]
    beats = [a - c for a, c in zip(acked, counted, strict=True)]
    stop.set()
    for task in beaters:
        task.cancel()
    await asyncio.gather(*beaters, return_exceptions=True)
    for st in streams_:
        st.cancel()
    for channel in channels:
        await channel.close(None)
    return [
        {
            "replica": s.name,
            "beats": b,
            "cpu_s": round(c, 2),
            "us_per_beat": round(c / b * 1e6) if b else None,
        }
        for s, b, c in zip(servers, beats, cpu, strict=True)
    ]


async def leader_of(servers: Sequence[common.Server]) -> str:
    names = set()
    for server in servers:
        async with aio.insecure_channel(server.address) as channel:
            stats = await nsg.NodeServiceStub(channel).GetNodeStats(
                npb.GetNodeStatsRequest(), metadata=server.metadata, timeout=5
            )
        names.add(stats.leader_id)
    return names.pop() if len(names) == 1 else ""


async def failover(servers: list[common.Server]) -> float:
    """Kills the leader with SIGKILL; seconds until the survivors agree on another one."""
    old = ""
    for _ in range(1200):
        old = await leader_of(servers)
        if old:
            break
        await asyncio.sleep(0.05)
    victim = next(s for s in servers if s.name == old)
    survivors = [s for s in servers if s is not victim]
    killed = time.perf_counter()
    victim.proc.kill()
    victim.proc.wait()
    for _ in range(3000):  # polls: the lease runs out by the database's clock
        if (await leader_of(survivors)) not in ("", old):
            return time.perf_counter() - killed
        await asyncio.sleep(0.02)
    raise RuntimeError("no new leader within a minute")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--agents", type=int, default=600)
    parser.add_argument("--interval-s", type=float, default=1.0)
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    url = postgres_server.database_url()
    try:
        with common.workdir("replicas") as work:
            data_dir = work / "keys"
            provision_keys(data_dir)
            with contextlib.ExitStack() as stack:
                servers = [stack.enter_context(replica(work, data_dir, url, i)) for i in (1, 2, 3)]
                seen = asyncio.run(visibility(servers[0], servers[1], args.writes, args.rate))
                spread = asyncio.run(
                    spread_fleet(servers, args.agents, args.interval_s, args.window_s)
                )
                times = []
                for _ in range(args.kills):
                    times.append(asyncio.run(failover(servers)))
                    for i, server in enumerate(servers):  # restart the killed one
                        if not server.alive():
                            servers[i] = stack.enter_context(replica(work, data_dir, url, i + 1))
    finally:
        postgres_server.stop()
    result = {
        "visibility": seen,
        "fleet": spread,
        "failover_s": [round(t, 2) for t in times],
        "lease_s": LEASE_S,
    }
    print(
        common.markdown_table(
            ["write on r1 -> watch on r2", "p50", "p99", "max", "failover after kill -9"],
            [
                [
                    f"{seen['seen']}/{seen['writes']} at {args.rate:g}/s",
                    f"{seen['p50_ms']} ms",
                    f"{seen['p99_ms']} ms",
                    f"{seen['max_ms']} ms",
                    ", ".join(f"{t:.2f} s" for t in times) + f" (lease {LEASE_S:g} s)",
                ]
            ],
        )
    )
    print(
        common.markdown_table(
            ["replica", f"beats acked in {args.window_s:g} s", "server CPU", "CPU per beat"],
            [
                [f["replica"], str(f["beats"]), f"{f['cpu_s']} s", f"{f['us_per_beat']} us"]
                for f in spread
            ],
        )
    )
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "replicas": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
