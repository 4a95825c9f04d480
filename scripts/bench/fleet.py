"""Heartbeat fleet, paced: N simulated agents, each holding one real heartbeat stream to a real
controller and beating every T seconds, spread over several client processes and many
connections; side by side with etcd's LeaseKeepAlive at the same N (the anchor), same client,
and with `--floor` the bare grpc.aio server (`bare_grpc.py`: a session for the hello, an ack per
beat, nothing else), what any Python gRPC server holding the streams pays.

    python scripts/bench/fleet.py --agents 10000 --interval-s 10 --duration-s 30 --runs 3

Reports streams held, beats/s, ack latency p50/p99/p99.9, the server's CPU and RSS (from /proc),
RSS per stream, errors and reconnects, the client processes' CPU, and the ratios to etcd and to
the floor.
Also the home of the controller's side of every stream scenario (its driver and registration)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common
import etcd
import report
import streams
from automator67.v1 import agent_service_pb2_grpc as asg
from automator67.v1 import heartbeat_pb2 as hb
from automator67.v1 import node_pb2
from automator67.v1 import node_service_pb2 as ns
from automator67.v1 import node_service_pb2_grpc as nsg
from grpc import aio

if TYPE_CHECKING:
    from automator67.v1.agent_service_pb2_grpc import AgentServiceAsyncStub
    from automator67.v1.node_service_pb2_grpc import NodeServiceAsyncStub

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
PROVIDERS = ("render", "fly", "bare-metal")
TIERS = ("web", "batch", "gpu")


class ControllerStream:
    """One agent's heartbeat stream: hello, then beats; each beat returns on its ack."""

    def __init__(self, stub: AgentServiceAsyncStub, node_id: str, token: str) -> None:
        self._stub = stub
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._hello = hb.HeartbeatRequest(
            hello=hb.AgentHello(node_id=node_id, agent_version="bench", drivers=["simulated"])
        )
        self._call: aio.StreamStreamCall[hb.HeartbeatRequest, hb.HeartbeatResponse] | None = None
        self._sequence = 0

    async def open(self) -> None:
        self._call = self._stub.Heartbeat(None, metadata=self._metadata)  # written via write()
        await self._call.write(self._hello)
        while await self._next() != "session":
            pass  # nothing else comes before the session

    async def beat(self) -> None:
        assert self._call is not None
        self._sequence += 1
        load = hb.NodeLoad(cpu_percent=12.5, memory_used_gb=1.5, disk_used_gb=10)
        await self._call.write(
            hb.HeartbeatRequest(beat=hb.Beat(sequence=self._sequence, load=load))
        )
        while (kind := await self._next()) != "ack":
            if kind == "reconnect":
                raise streams.StreamEndedError("the controller asked to reconnect")

    async def _next(self) -> str:
        assert self._call is not None
        response = await self._call.read()
        if response is streams.EOF:
            raise streams.StreamEndedError("the controller ended the stream")
        assert isinstance(response, hb.HeartbeatResponse)
        return response.WhichOneof("kind") or ""

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


class ControllerDriver:
    def stream(self, channel: aio.Channel, ident: str, token: str) -> ControllerStream:
        return ControllerStream(asg.AgentServiceStub(channel), ident, token)


def node(i: int) -> node_pb2.Node:
    """A simulated node; regions, providers and tiers vary so that filters select a part."""
    return node_pb2.Node(
        provider=PROVIDERS[i % len(PROVIDERS)],
        endpoint=f"https://sim-{i}.bench.invalid",
        region=REGIONS[(i // 3) % len(REGIONS)],
        labels={"tier": TIERS[(i // 12) % len(TIERS)]},
        capabilities=node_pb2.Capabilities(cpu_cores=4, memory_gb=8, disk_gb=50),
    )


async def register_nodes(
    address: str,
    count: int,
    metadata: tuple[tuple[str, str], ...] | None = None,
    concurrency: int = 64,
) -> tuple[list[str], list[str]]:
    """Registers `count` nodes; returns their ids and agent tokens (empty strings without auth)."""
    channels = [aio.insecure_channel(address, options=streams.CHANNEL_OPTIONS) for _ in range(4)]
    stubs = [nsg.NodeServiceStub(c) for c in channels]
    ids: list[str] = [""] * count
    tokens: list[str] = [""] * count
    next_index = 0

    async def registrar(stub: NodeServiceAsyncStub) -> None:
        nonlocal next_index
        while next_index < count:
            i, next_index = next_index, next_index + 1
            reply = await stub.RegisterNode(
                ns.RegisterNodeRequest(node=node(i), request_id=f"bench-{i}"),
                timeout=60,
                metadata=metadata,
            )
            ids[i], tokens[i] = reply.node.id, reply.agent_token

    try:
        await asyncio.gather(*(registrar(stubs[i % len(stubs)]) for i in range(concurrency)))
    finally:
        for channel in channels:
            await channel.close(None)
    return ids, tokens if any(tokens) else []


def controller_target(
    server_args: Sequence[str],
    *,
    restored: bool = False,
    log_level: str = "info",
    gc_stats: bool = False,
) -> streams.Target:
    """The controller, with `n` nodes registered through RegisterNode (their agent tokens kept).

    `restored`: the fleet is then marked READY in the store, held by the controller (its
    replica id, kept across the restart as a replica's host:port is), and the controller restarted
    on it, as after a restart with a live fleet: the streams then open without a status
    transition and without a claim (a node held by another replica id is rewritten, with its
    change logged, when its stream opens: a write per node that a real restart does not make).
    (A fresh fleet's first connections each wake the scheduler, whose pass costs O(nodes): see
    docs/benchmarks.md. `restored` measures the steady state at N without that storm.)
    `gc_stats`: the controller runs through gcstats.py, which logs its long collections."""

    if restored:
        server_args = [*server_args, "--replica-id", RESTORED_REPLICA_ID]

    @contextlib.contextmanager
    def session(tmp: Path, count: int) -> Iterator[tuple[common.Server, streams.Prepared]]:
        with common.controller(tmp, server_args, log_level=log_level, gc_stats=gc_stats) as server:
            started = time.perf_counter()
            ids, tokens = asyncio.run(register_nodes(server.address, count, server.metadata))
            seconds = time.perf_counter() - started
            if not restored:
                yield server, streams.Prepared(ids, tokens, {}, seconds)
                return
        marked = asyncio.run(mark_ready(tmp / "data"))
        common.log(f"  marked {marked} nodes READY in the store; restarting the controller")
        with common.controller(tmp, server_args, log_level=log_level, gc_stats=gc_stats) as server:
            yield server, streams.Prepared(ids, tokens, {}, seconds)

    return streams.Target("controller", "fleet:ControllerDriver", session)


RESTORED_REPLICA_ID = "bench-restored"


NODE_TOKEN_CHARS = 380  # an EdDSA node token's length (controller/auth/tokens.py)


def bare_target() -> streams.Target:
    """The floor: bare_grpc.py on the controller's default loop, with made-up node ids and
    tokens (it checks nothing), each token as long as a node token, since every stream's
    metadata is held for the stream's life."""
    from controller.event_loop import resolve

    @contextlib.contextmanager
    def session(tmp: Path, count: int) -> Iterator[tuple[common.Server, streams.Prepared]]:
        with common.bare_grpc(tmp, event_loop=resolve("auto")) as server:
            ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(count)]
            tokens = [f"{i:012d}".rjust(NODE_TOKEN_CHARS, "t") for i in range(count)]
            yield server, streams.Prepared(ids, tokens, {}, 0.0)

    return streams.Target("bare grpc.aio", "fleet:ControllerDriver", session, "controller")


def measure_floor(
    result: dict[str, Any], agents: int, settings: streams.Settings, runs: int
) -> None:
    """Adds the bare floor at `agents` streams to a scenario's `result` (under "bare") and the
    controller's ratios to it (under "floor_ratios"), for the paced and the saturated fleet."""
    bare = streams.measure(bare_target(), agents, settings, runs)
    result["bare"] = bare
    result["floor_ratios"] = streams.ratios(result["controller"], bare)


async def mark_ready(data_dir: Path) -> int:
    """Marks every node READY and held by RESTORED_REPLICA_ID through the store's contract
    (controller/store/base.py), with the controller stopped."""
    from controller.models import NodeStatus
    from controller.store import open_store

    store = open_store(f"sqlite:///{data_dir / 'controller.db'}")
    await store.open()
    try:
        nodes = await store.nodes.list_all()
        ready = [
            dataclasses.replace(n, status=NodeStatus.READY, holder=RESTORED_REPLICA_ID)
            for n in nodes
        ]
        written = await store.nodes.update_many(ready)
        return sum(1 for n in written if n is not None)
    finally:
        await store.close()


def paced_server_args(interval_s: float) -> list[str]:
    """The controller as deployed, with the agents' interval."""
    return ["--heartbeat-interval-s", f"{interval_s:g}"]


def paced(
    agents: int,
    settings: streams.Settings,
    runs: int,
    *,
    anchor: bool,
    floor: bool = False,
    restored: bool = False,
    gc_stats: bool = False,
) -> dict[str, Any]:
    """The paced scenario at one N: the controller, then the bare floor (if `floor`) and etcd
    (if `anchor`), and the controller's ratios to each."""
    args = paced_server_args(settings.interval_s)
    target = controller_target(args, restored=restored, gc_stats=gc_stats)
    ours = streams.measure(target, agents, settings, runs, gc_stats=gc_stats)
    result: dict[str, Any] = {"agents": agents, "fleet": "restored" if restored else "fresh"}
    result["controller"] = ours
    if floor:
        measure_floor(result, agents, settings, runs)
    if anchor:
        theirs = streams.measure(
            etcd.etcd_target(ttl_s=3 * settings.interval_s), agents, settings, runs
        )
        result["etcd"] = theirs
        result["ratios"] = streams.ratios(ours, theirs)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    streams.add_fleet_arguments(parser, interval_s=10.0)
    streams.add_floor_argument(parser)
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    anchor = not args.no_anchor and etcd.available()
    settings = streams.settings_from(args, "paced")
    results = [
        paced(
            n,
            settings,
            args.runs,
            anchor=anchor,
            floor=args.floor,
            restored=args.restored,
            gc_stats=args.gc_stats,
        )
        for n in args.agents
    ]
    print(report.fleet_table("Heartbeat fleet, paced", results))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "fleet_paced": results})
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
