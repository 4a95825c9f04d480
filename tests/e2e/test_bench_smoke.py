"""The benchmark harness (scripts/bench/) in smoke mode: every scenario, tiny and fast, so that the
harness never rots. Its figures are not checked, only that each scenario ran, measured something
and left no process behind. The etcd anchor runs only where the `etcd` binary is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


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
