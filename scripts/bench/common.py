"""What every benchmark scenario shares: starting and stopping the servers under test, reading
their CPU and memory from /proc, statistics over runs, and the output (a markdown table on stdout,
a JSON file).

Every process started here is stopped by the context manager that started it: SIGTERM, then
SIGKILL after a timeout. `install_signal_handlers()` turns SIGTERM into SystemExit, so that a
benchmark that is itself terminated still runs its `finally` blocks."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
BENCH_DIR = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT_S = 30.0
ETCD_INSTALL_HINT = "apt-get install -y etcd-server   (Debian/Ubuntu: etcd 3.4)"

Row = dict[str, Any]


def install_signal_handlers() -> None:
    """SIGTERM ends the benchmark through SystemExit, so every `finally` stops its processes."""

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


# /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident set size of `pid`, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_of(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def load_average() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict[str, Any]:
    """Cores, memory and load of this machine, from /proc."""
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kb = next(int(line.split()[1]) for line in meminfo if line.startswith("MemTotal:"))
    model = ""
    with contextlib.suppress(OSError, StopIteration):
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line)
    return {
        "cores": os.cpu_count() or 0,
        "cpu_model": model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "load_average": load_average(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "etcd": etcd_version(),
    }


# Processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process under test, listening on `address` (127.0.0.1 only)."""

    name: str
    proc: subprocess.Popen[bytes]
    address: str
    log_path: Path
    token: str = ""  # an admin bearer token, when the server requires one

    @property
    def metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("authorization", f"Bearer {self.token}"),) if self.token else None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def alive(self) -> bool:
        return self.proc.poll() is None


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout_s`. Safe to call twice."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)


def wait_serving(server: Server, timeout_s: float, service: str = "") -> float:
    """Polls grpc.health.v1 Check until SERVING; returns the seconds waited. Raises RuntimeError
    (with the server's last log lines) if the process exits or `timeout_s` passes."""
    started = time.perf_counter()
    deadline = started + timeout_s
    options = [
        ("grpc.initial_reconnect_backoff_ms", 5),
        ("grpc.min_reconnect_backoff_ms", 5),
        ("grpc.max_reconnect_backoff_ms", 20),
    ]
    with grpc.insecure_channel(server.address, options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited at start:\n{server.log_tail()}")
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(
                    f"{server.name} not SERVING in {timeout_s}s:\n{server.log_tail()}"
                )
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=service),
                    timeout=min(left, 1.0),
                    wait_for_ready=True,
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.perf_counter() - started
            except grpc.RpcError:
                pass
            time.sleep(0.002)


def controller_command(
    port: int,
    data_dir: Path,
    args: Sequence[str] = (),
    *,
    gc_stats: bool = False,
    entry_script: Path | None = None,
) -> list[str]:
    """`python -m controller serve ...`; with `gc_stats`, through gcstats.py (same controller, its
    long garbage collections logged); with `entry_script`, through that script (a variant run
    as `python -m controller` is, such as otel_library.py)."""
    entry = [str(BENCH_DIR / "gcstats.py")] if gc_stats else ["-m", "controller"]
    if entry_script is not None:
        entry = [str(entry_script)]
    return [
        sys.executable,
        *entry,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *args,
    ]


def controller_env(log_level: str) -> dict[str, str]:
    """This environment without the controller's own settings (a developer's exported A67_*
    must not change what is measured)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("A67_") and k not in {"PORT", "LOG_LEVEL"}
    }
    env["LOG_LEVEL"] = log_level
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


@contextlib.contextmanager
def controller(
    workdir: Path,
    args: Sequence[str] = (),
    *,
    log_level: str = "info",
    timeout_s: float = 120.0,
    gc_stats: bool = False,
    entry_script: Path | None = None,
) -> Iterator[Server]:
    """A controller on a free port of 127.0.0.1 with its store in `workdir/data`, SERVING when
    yielded; stopped (SIGTERM, then SIGKILL) on exit. Its log goes to `workdir/controller.log`."""
    port = free_port()
    log_path = workdir / "controller.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            controller_command(
                port, workdir / "data", args, gc_stats=gc_stats, entry_script=entry_script
            ),
            cwd=ROOT,
            env=controller_env(log_level),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server("controller", proc, f"127.0.0.1:{port}", log_path)
    try:
        wait_serving(server, timeout_s)
        server.token = admin_token(workdir / "data", args)
        yield server
    finally:
        stop_process(proc)


def admin_token(data_dir: Path, args: Sequence[str]) -> str:
    """An admin token from `automator67 token create`, signed with the key the controller made
    in `data_dir`; "" when authentication is off (or the command is missing)."""
    if "--auth=off" in args or "off" in _flag_values(args, "--auth"):
        return ""
    cmd = [sys.executable, "-m", "controller", "token", "create", "--role", "admin"]
    cmd += ["--subject", "bench", "--ttl", "12h", "--data-dir", str(data_dir)]
    out = subprocess.run(
        cmd, cwd=ROOT, env=controller_env("warning"), capture_output=True, text=True, timeout=60
    )
    if out.returncode != 0:
        log(f"no admin token ({out.stderr.strip()[-200:]}); calling without one")
        return ""
    return out.stdout.strip().splitlines()[-1]


def _flag_values(args: Sequence[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args[:-1]) if a == flag]


def gc_pauses(log_path: Path, start_wall: float, end_wall: float) -> dict[str, float]:
    """The "gc pause" lines gcstats.py logged between two wall-clock times."""
    pauses = []
    with contextlib.suppress(OSError):
        for line in log_path.read_text(errors="replace").splitlines():
            if '"gc pause"' in line:
                with contextlib.suppress(ValueError, KeyError):
                    entry = json.loads(line)
                    if start_wall <= entry["t"] <= end_wall:
                        pauses.append(float(entry["ms"]))
    return {
        "gc_pauses_over_100ms": sum(1 for p in pauses if p > 100),
        "gc_pause_max_ms": max(pauses, default=0.0),
        "gc_pause_total_ms": round(sum(pauses), 1),
    }


def etcd_binary() -> str | None:
    return shutil.which("etcd")


def etcd_version() -> str:
    binary = etcd_binary()
    if binary is None:
        return ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return out.stdout.splitlines()[0].split(":", 1)[1].strip()
    return ""


def require_etcd() -> str:
    binary = etcd_binary()
    if binary is None:
        raise RuntimeError(f"the etcd binary is not on PATH; install it with: {ETCD_INSTALL_HINT}")
    return binary


@contextlib.contextmanager
def etcd(workdir: Path, *, timeout_s: float = 60.0) -> Iterator[Server]:
    """A one-member etcd on free ports of 127.0.0.1 with a fresh data dir under `workdir`,
    SERVING when yielded; stopped on exit."""
    binary = require_etcd()
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    cmd = [
        binary,
        "--name",
        "bench",
        "--data-dir",
        str(workdir / "etcd-data"),
        "--listen-client-urls",
        client_url,
        "--advertise-client-urls",
        client_url,
        "--listen-peer-urls",
        peer_url,
        "--initial-advertise-peer-urls",
        peer_url,
        "--initial-cluster",
        f"bench={peer_url}",
        "--initial-cluster-state",
        "new",
        "--logger",
        "zap",
        "--log-level",
        "warn",
    ]
    log_path = workdir / "etcd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env={**os.environ}
        )
    server = Server("etcd", proc, f"127.0.0.1:{client}", log_path)
    try:
        wait_serving(server, timeout_s)
        yield server
    finally:
        stop_process(proc)


@contextlib.contextmanager
def bare_grpc(
    workdir: Path, *, timeout_s: float = 60.0, event_loop: str = "asyncio"
) -> Iterator[Server]:
    """The floor (bare_grpc.py: grpc.aio and the NodeService and AgentService stubs, nothing
    else) on a free port of 127.0.0.1, SERVING when yielded; stopped on exit."""
    port = free_port()
    log_path = workdir / "bare.log"
    command = [sys.executable, str(BENCH_DIR / "bare_grpc.py"), "--port", str(port)]
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [*command, "--event-loop", event_loop],
            cwd=ROOT,
            env=controller_env("warning"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    server = Server("bare grpc.aio", proc, f"127.0.0.1:{port}", log_path)
    try:
        wait_serving(server, timeout_s)
        yield server
    finally:
        stop_process(proc)


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    """A temporary folder for one server's data and log; kept (and named on stderr) when
    A67_BENCH_KEEP=1, to read a server's log after a run."""
    if os.environ.get("A67_BENCH_KEEP") == "1":
        path = Path(tempfile.mkdtemp(prefix=f"a67-bench-{prefix}-"))
        log(f"  keeping {path}")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"a67-bench-{prefix}-") as tmp:
        yield Path(tmp)


# Statistics


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence; NaN when empty."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of several runs."""
    clean = [v for v in values if v == v]  # drop NaN
    if not clean:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan")}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean)}


def aggregate(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from several runs: every numeric field becomes {median, min, max}; other fields
    keep the first run's value; `runs` counts them."""
    if not runs:
        return {"runs": 0}
    result: dict[str, Any] = {"runs": len(runs)}
    for key, first in runs[0].items():
        if isinstance(first, bool) or not isinstance(first, int | float):
            result[key] = first
            continue
        values = [float(r[key]) for r in runs if isinstance(r.get(key), int | float)]
        result[key] = {k: round(v, 3) for k, v in spread(values).items()}
    return result


def med(value: Any) -> float:
    """The median of an aggregated field (or the plain number)."""
    if isinstance(value, Mapping):
        return float(value["median"])
    if isinstance(value, int | float):
        return float(value)
    return float("nan")


def ratio(ours: Any, theirs: Any) -> float:
    a, b = med(ours), med(theirs)
    if b != b or a != a or b == 0:
        return float("nan")
    return round(a / b, 2)


# Output


def fmt(value: Any, digits: int = 1) -> str:
    """A cell: a plain number, or `median (min-max)` for an aggregated one."""
    if isinstance(value, Mapping) and "median" in value:
        m, lo, hi = value["median"], value["min"], value["max"]
        if m != m:
            return "n/a"
        if lo == hi:
            return _num(m, digits)
        return f"{_num(m, digits)} ({_num(lo, digits)}-{_num(hi, digits)})"
    if isinstance(value, float):
        return "n/a" if value != value else _num(value, digits)
    return str(value)


def _num(x: float, digits: int) -> str:
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}" if digits else f"{x:.0f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
