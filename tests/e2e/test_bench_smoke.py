"""The benchmark harness (scripts/bench/) in smoke mode: every scenario, tiny and fast, so that the
harness never rots. Its figures are not checked, only that each scenario ran, measured something
and left no process behind. The etcd anchor runs only where the `etcd` binary is installed.

The compiled load client (scripts/bench/loadclient, built by cppclient.py) is built and run on a
tiny fleet against a real controller (and etcd where installed); its toolchain is installed from
Debian's packages when missing and the test runs as root with apt-get (skipped otherwise)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "scripts" / "bench"
# What the compiled client's build needs (cppclient.DEBIAN_PACKAGES).
TOOLCHAIN_PACKAGES = ("g++", "make", "pkg-config", "libgrpc++-dev", "protobuf-compiler-grpc")
APT_TIMEOUT_S = 600


def _toolchain_missing() -> list[str]:
    check = [sys.executable, "-c", "import cppclient; print(','.join(cppclient.missing()))"]
    out = subprocess.run(check, cwd=BENCH, capture_output=True, text=True, timeout=60, check=True)
    return [name for name in out.stdout.strip().split(",") if name]


def _ensure_toolchain(log: Path) -> None:
    """Installs the compiled client's toolchain from Debian's packages when it is missing;
    skips (with the reason) when it cannot be installed here."""
    lacking = _toolchain_missing()
    if not lacking:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"the C++ load client needs {lacking}: not root, or no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *TOOLCHAIN_PACKAGES],
    ):
        with log.open("a") as out:
            done = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env=env, timeout=APT_TIMEOUT_S
            )
        assert done.returncode == 0, f"{command} failed:\n{log.read_text()[-3000:]}"
    assert not _toolchain_missing(), log.read_text()[-3000:]


def _processes_under(folder: Path) -> list[str]:
    """Command lines that name `folder` (the servers the harness started keep their data there)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in text:
            found.append(text)
    return found


@pytest.mark.timeout(400)
def test_every_scenario_runs_in_smoke_mode(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    work = tmp_path / "work"  # the harness's temporary folders go here (TMPDIR)
    work.mkdir()
    run = subprocess.run(
        [sys.executable, "scripts/bench/run_all.py", "--smoke", "--no-docs", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(work)},
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "### Against the issue's targets" in run.stdout
    results = json.loads(out.read_text())["results"]
    assert "errors" not in results, results.get("errors")

    for paced in results["paced"]:
        controller = paced["controller"]
        assert controller["streams_open"]["median"] == paced["agents"]
        assert controller["beats_per_s"]["median"] > 0
        assert controller["errors"]["median"] == 0
        # The bare grpc.aio floor held the same streams, and the ratios to it were taken.
        assert paced["bare"]["streams_open"]["median"] == paced["agents"]
        assert paced["bare"]["errors"]["median"] == 0
        assert set(paced["floor_ratios"]) >= {"cpu_per_beat", "rss_per_stream", "ack_p99"}
        if shutil.which("etcd"):
            assert paced["etcd"]["streams_open"]["median"] == paced["agents"]
            assert "ratios" in paced
    assert results["saturated"][0]["controller"]["beats_per_s"]["median"] > 0
    unary = results["unary"][0]
    for name, loads in unary["calls"].items():
        assert set(loads) == {"paced_25", "paced_50", "saturated"}
        for load, figures in loads.items():
            assert figures["requests_per_s"]["median"] > 0
            # The bare grpc.aio floor ran the same window, and the ratios were taken (NaN
            # where a tiny window's CPU rounds to no clock tick).
            assert unary["baseline"][name][load]["requests_per_s"]["median"] > 0
            assert set(unary["ratios"][name][load]) >= {"cpu_per_call", "p50", "p99"}
    assert set(unary["list_vs_get"]) == {"paced_25", "paced_50", "saturated"}
    register_only, joined = results["join"]
    assert register_only["registered"]["median"] == register_only["agents"]["median"]
    assert register_only["registrations_per_s"]["median"] > 0
    assert joined["streams_opened"]["median"] == joined["agents"]["median"]
    assert joined["all_ready_s"]["median"] > 0  # NaN (never all READY) fails too
    assert joined["errors"]["median"] == 0
    assert results["startup"]["exec_to_serving_ms"]["median"] > 0
    assert results["placement"]["placements_per_s"]["median"] > 0
    assert not _processes_under(work), "the harness left processes running"


@pytest.mark.timeout(1500)
def test_compiled_client_builds_and_runs_a_tiny_fleet(tmp_path: Path) -> None:
    """20 streams, a few beats each, against a real controller (and etcd where installed): the
    C++ client builds (or reuses its build), opens every stream, and its beats are acked."""
    _ensure_toolchain(tmp_path / "apt.log")
    out = tmp_path / "fleet.json"
    work = tmp_path / "work"
    work.mkdir()
    command = [sys.executable, "scripts/bench/fleet.py", "--client", "cpp", "--agents", "20"]
    command += ["--interval-s", "0.5", "--duration-s", "2", "--warmup-s", "0.5", "--runs", "1"]
    command += ["--cpp-streams-per-connection", "8", "--floor", "--json", str(out)]  # 3 connections
    run = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(work)},
        capture_output=True,
        text=True,
        timeout=1400,  # a first build on a busy 2-core machine takes minutes
    )
    assert run.returncode == 0, run.stderr[-4000:]
    (paced,) = json.loads(out.read_text())["fleet_paced"]
    sides = ["controller", "bare", "etcd"] if shutil.which("etcd") else ["controller", "bare"]
    for side in sides:
        figures = paced[side]
        assert figures["client"] == "cpp"
        assert figures["streams_open"]["median"] == 20, (side, figures)
        assert figures["beats_per_s"]["median"] > 0, (side, figures)
        assert figures["errors"]["median"] == 0, (side, figures["error_kinds"])
        assert figures["ack_p99_ms"]["median"] > 0, (side, figures)
    assert not _processes_under(work), "the harness left processes running"
