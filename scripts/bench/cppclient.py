"""The compiled stream load client (loadclient/loadclient.cc): the harness's side.

The Python client (streams.py) costs ~350 us of client CPU per beat (grpcio's per-message work),
so at 50,000 paced streams the load clients used more of the 2 cores than the server under test.
The C++ client drives every stream of a run from one process and a few threads (one gRPC
completion queue and one timer heap each), over one connection per
`cpp_streams_per_connection` streams, and speaks both protocols (the controller's Heartbeat,
etcd's LeaseKeepAlive). Registration and lease grants stay in Python; the node ids and agent
tokens (or lease ids) reach the client through a file.

It is built on demand with loadclient/Makefile into loadclient/build/<hash of its sources>/
(never committed), and the build is reused while the sources do not change. It needs g++, make,
pkg-config, protoc, grpc_cpp_plugin and the gRPC C++ library:

    apt-get install -y g++ make pkg-config libgrpc++-dev protobuf-compiler-grpc

The run follows the Python client's protocol (streams.py): the client opens its streams and
says so on stdout, the harness sends it the measured window (CLOCK_MONOTONIC seconds, the clock
of time.monotonic()), samples /proc at the window's start and end, and reads the client's
result (counts, a latency histogram, errors by kind, its own CPU) as one JSON line."""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import common
import fleet_run

SOURCE_DIR = common.BENCH_DIR / "loadclient"
SOURCES = (
    SOURCE_DIR / "loadclient.cc",
    SOURCE_DIR / "heartbeat_wire.proto",
    SOURCE_DIR / "Makefile",
    common.BENCH_DIR / "etcd_proto" / "etcd_lease.proto",
)
BUILD_ROOT = SOURCE_DIR / "build"
TOOLS = ("g++", "make", "pkg-config", "protoc", "grpc_cpp_plugin")
DEBIAN_PACKAGES = ("g++", "make", "pkg-config", "libgrpc++-dev", "protobuf-compiler-grpc")
INSTALL_HINT = "apt-get install -y " + " ".join(DEBIAN_PACKAGES)


def missing() -> list[str]:
    """What the build needs and this machine lacks (tools, or the gRPC C++ library)."""
    lacking = [tool for tool in TOOLS if shutil.which(tool) is None]
    if "pkg-config" not in lacking:
        check = subprocess.run(["pkg-config", "--exists", "grpc++", "protobuf"], check=False)
        if check.returncode != 0:
            lacking.append("libgrpc++-dev (pkg-config grpc++)")
    return lacking


def available() -> bool:
    return not missing()


def default_client() -> str:
    """`cpp` where its toolchain is installed, else `python`."""
    return "cpp" if available() else "python"


def source_hash() -> str:
    digest = hashlib.sha256()
    for path in SOURCES:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def binary() -> Path:
    """The client's executable, built first if its sources changed since the last build."""
    target = BUILD_ROOT / source_hash()
    exe = target / "loadclient"
    if exe.exists():
        return exe
    lacking = missing()
    if lacking:
        raise RuntimeError(f"cannot build the C++ load client, missing {lacking}: {INSTALL_HINT}")
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    common.log(f"building the C++ load client into {target} (once per source change)")
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=BUILD_ROOT))
    try:
        run = subprocess.run(
            ["make", "-C", str(SOURCE_DIR), f"-j{os.cpu_count() or 2}", f"BUILD={staging}"],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if run.returncode != 0:
            raise RuntimeError(f"building the C++ load client failed:\n{run.stderr[-4000:]}")
        with contextlib.suppress(OSError):  # another build of the same sources may have won
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not exe.exists():
        raise RuntimeError(f"the build made no {exe}")
    return exe


def command(
    exe: Path,
    protocol: str,
    address: str,
    idents_path: Path,
    settings: fleet_run.Settings,
    seed: int = 1,
) -> list[str]:
    """The client's command line for a run with `settings` (fleet_run.Settings)."""
    return [
        str(exe),
        "--protocol",
        protocol,
        "--address",
        address,
        "--idents",
        str(idents_path),
        "--mode",
        settings.mode,
        "--interval-s",
        f"{settings.interval_s:g}",
        "--threads",
        str(settings.cpp_threads),
        "--streams-per-channel",
        str(settings.cpp_streams_per_connection),
        "--open-concurrency",
        str(settings.open_concurrency * max(1, settings.workers)),
        "--open-timeout-s",
        f"{settings.open_timeout_s:g}",
        "--grace-s",
        f"{settings.grace_s:g}",
        "--seed",
        str(seed),
    ]


def write_idents(path: Path, idents: Sequence[str], tokens: Sequence[str]) -> None:
    """One stream a line: `ident [token]`."""
    with path.open("w") as out:
        for i, ident in enumerate(idents):
            token = tokens[i] if tokens else ""
            out.write(f"{ident} {token}\n" if token else f"{ident}\n")


class Client:
    """One running client process; `stop()` ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, cmd: Sequence[str]) -> None:
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self._stdout: IO[str] = self.proc.stdout
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, event: str, deadline: float, server: common.Server) -> dict[str, Any]:
        """The next JSON line whose "event" is `event`, waiting until `deadline`."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"the C++ load client sent no {event!r} in time")
            if not server.alive():
                raise RuntimeError(f"{server.name} died during the run:\n{server.log_tail()}")
            if not self._selector.select(min(left, 1.0)):
                continue
            line = self._stdout.readline()
            if not line:
                err = self.proc.stderr.read()[-2000:] if self.proc.stderr else ""
                raise RuntimeError(f"the C++ load client ended before {event!r}:\n{err}")
            message: dict[str, Any] = json.loads(line)
            if message.get("event") == event:
                return message

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    def stop(self) -> None:
        self.send("stop")
        with contextlib.suppress(OSError):
            if self.proc.stdin:
                self.proc.stdin.close()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._selector.close()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


def latencies_of(histogram: Sequence[Sequence[float]]) -> array.array[float]:
    """Seconds, one per acked beat, from the client's [[microseconds, count], ...] histogram
    (each bucket's middle: under 1.6 % off)."""
    out = array.array("d")
    for us, count in histogram:
        out.extend([us / 1e6] * int(count))
    return out


def run_fleet(
    server: common.Server,
    protocol: str,
    idents: Sequence[str],
    tokens: Sequence[str],
    settings: fleet_run.Settings,
    baseline_rss_mb: float,
) -> fleet_run.FleetRun:
    """streams.run_fleet with the compiled client: one process for every stream. Returns a
    fleet_run.FleetRun measured the same way (the server's and the client's CPU from /proc over
    the same window)."""

    exe = binary()
    with tempfile.TemporaryDirectory(prefix="a67-loadclient-") as tmp:
        idents_path = Path(tmp) / "idents.txt"
        write_idents(idents_path, idents, tokens)
        client = Client(command(exe, protocol, server.address, idents_path, settings))
        try:
            deadline = time.monotonic() + settings.open_timeout_s + 120
            opened = client.expect("opened", deadline, server)
            run = fleet_run.FleetRun(streams_open=opened["opened"], open_s=opened["seconds"])
            start = time.monotonic() + settings.warmup_s
            end = start + settings.duration_s
            client.send(f"window {start:.6f} {end:.6f}")
            fleet_run.sleep_until(start)
            server_cpu0, client_cpu0 = common.cpu_seconds(server.pid), common.cpu_of([client.pid])
            wall0 = time.time()
            fleet_run.sleep_until(end)
            run.window_wall = (wall0, time.time())
            server_cpu = common.cpu_seconds(server.pid) - server_cpu0
            client_cpu = common.cpu_of([client.pid]) - client_cpu0
            run.server_rss_mb = common.rss_mb(server.pid)
            result = client.expect("result", end + settings.grace_s + 60, server)
        finally:
            client.stop()
    latencies = latencies_of(result["latency_us"])
    run.acked_total = result["acked_total"]
    common.log(
        f"  compiled client: {result['acked_total']:,} of {result['sent_total']:,} beats acked"
        f" in all, {result['cpu_window_s']:.2f} s CPU in the window (getrusage),"
        f" max RSS {result['max_rss_kb'] / 1024:.0f} MB, {result['channels']} connections"
    )
    return fleet_run.summarize(
        run, [result], latencies, settings, (server_cpu, client_cpu), baseline_rss_mb
    )
