"""The anchor: etcd's `LeaseKeepAlive` bidirectional stream, driven by the same Python client as
the controller's heartbeat fleet (streams.py), against a one-member etcd 3.4 on 127.0.0.1 that
this script starts with a temporary data dir and free ports, and stops.

    python scripts/bench/etcd.py --agents 10000 --mode paced --interval-s 10

N leases are granted (TTL = 3 x interval, the client renewing at TTL/3 as etcd's own does, but
at least MIN_GRANT_TTL_S so that no lease expires while the others are granted and opened),
then each is kept alive on its own stream. The stubs come from `etcd_proto/etcd_lease.proto` (etcd's
own message and field numbers), compiled at run time into a temporary folder with grpc_tools.

Needs the `etcd` binary: `apt-get install -y etcd-server` (Debian/Ubuntu)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import common
import streams
from grpc import aio

PROTO_DIR = common.BENCH_DIR / "etcd_proto"
PROTO = "etcd_lease.proto"
# The shortest TTL a lease is granted with: granting 50,000 leases and opening their streams
# takes ~50 s, so a lease granted with 3 x 10 s expired before its stream opened (3,214 of
# 50,000 in one run). Keepalives cost etcd the same whatever the TTL.
MIN_GRANT_TTL_S = 120.0


def available() -> bool:
    if common.etcd_binary() is None:
        common.log(f"etcd not found: the anchor is skipped (install: {common.ETCD_INSTALL_HINT})")
        return False
    return True


def compile_stubs(out_dir: Path) -> Path:
    """Generates the Python stubs of etcd's lease API into `out_dir` (never committed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / PROTO),
        ],
        check=True,
        timeout=60,
    )
    return out_dir


def load_stubs(stub_dir: str) -> tuple[ModuleType, ModuleType]:
    if stub_dir not in sys.path:
        sys.path.insert(0, stub_dir)
    return (
        importlib.import_module("etcd_lease_pb2"),
        importlib.import_module("etcd_lease_pb2_grpc"),
    )


class EtcdStream:
    """One lease kept alive on its own LeaseKeepAlive stream. etcd answers nothing before the
    first keepalive, so opening the stream includes one keepalive round trip."""

    def __init__(self, stub: Any, lease_id: int, pb: ModuleType) -> None:
        self._stub = stub
        self._request = pb.LeaseKeepAliveRequest(ID=lease_id)
        self._call: Any = None

    async def open(self) -> None:
        self._call = self._stub.LeaseKeepAlive()
        await self.beat()

    async def beat(self) -> None:
        await self._call.write(self._request)
        response = await self._call.read()
        if response is streams.EOF:
            raise streams.StreamEndedError("etcd ended the stream")
        if response.TTL <= 0:
            raise streams.StreamEndedError("the lease expired")

    def cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None


class EtcdDriver:
    def __init__(self, stub_dir: str) -> None:
        self._pb, self._grpc = load_stubs(stub_dir)

    def stream(self, channel: aio.Channel, ident: str, token: str) -> EtcdStream:
        return EtcdStream(self._grpc.LeaseStub(channel), int(ident), self._pb)


async def grant_leases(address: str, stub_dir: str, count: int, ttl_s: float) -> list[str]:
    pb, pb_grpc = load_stubs(stub_dir)
    channels = [aio.insecure_channel(address, options=streams.CHANNEL_OPTIONS) for _ in range(4)]
    stubs = [pb_grpc.LeaseStub(c) for c in channels]
    ids: list[str] = [""] * count
    next_index = 0

    async def granter(stub: Any) -> None:
        nonlocal next_index
        while next_index < count:
            i, next_index = next_index, next_index + 1
            reply = await stub.LeaseGrant(pb.LeaseGrantRequest(TTL=int(ttl_s)), timeout=60)
            ids[i] = str(reply.ID)

    try:
        await asyncio.gather(*(granter(stubs[i % len(stubs)]) for i in range(64)))
    finally:
        for channel in channels:
            await channel.close(None)
    return ids


def etcd_target(ttl_s: float) -> streams.Target:
    @contextlib.contextmanager
    def session(tmp: Path, count: int) -> Iterator[tuple[common.Server, streams.Prepared]]:
        stub_dir = str(compile_stubs(tmp / "etcd_stubs"))
        with common.etcd(tmp) as server:
            started = time.perf_counter()
            ttl = max(ttl_s, MIN_GRANT_TTL_S)
            ids = asyncio.run(grant_leases(server.address, stub_dir, count, ttl))
            seconds = time.perf_counter() - started
            yield server, streams.Prepared(ids, [], {"stub_dir": stub_dir}, seconds)

    return streams.Target("etcd", "etcd:EtcdDriver", session)


def main(argv: Sequence[str] | None = None) -> int:
    import report

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    streams.add_fleet_arguments(parser, interval_s=10.0)
    parser.add_argument("--mode", choices=("paced", "closed"), default="paced")
    args = parser.parse_args(argv)
    common.install_signal_handlers()
    common.require_etcd()
    settings = streams.settings_from(args, args.mode)
    ttl_s = 3 * settings.interval_s if args.mode == "paced" else 60.0
    results = [
        {"agents": n, "etcd": streams.measure(etcd_target(ttl_s), n, settings, args.runs)}
        for n in args.agents
    ]
    print(report.fleet_table(f"etcd LeaseKeepAlive, {args.mode}", results))
    if args.json:
        common.write_json(args.json, {"machine": common.machine(), "etcd": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
