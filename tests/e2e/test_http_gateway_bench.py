"""scripts/bench/http_gateway.py in smoke mode, so that it never rots: it starts a controller
with an HTTP port, measures both transports and prints the ratio row; no server is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(200)
def test_the_gateway_bench_runs_and_reports_the_ratio(tmp_path: Path) -> None:
    args = ["--nodes", "5", "--concurrency", "2", "--duration-s", "0.5", "--runs", "1"]
    run = subprocess.run(
        [sys.executable, "scripts/bench/http_gateway.py", *args],
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    rows = {line.split("|")[1].strip(): line for line in run.stdout.splitlines() if "|" in line}
    assert {"grpc", "http", "http / grpc"} <= set(rows)
    ratio_cells = [cell.strip() for cell in rows["http / grpc"].split("|")[2:-1]]
    assert all(float(cell) > 0 for cell in ratio_cells), rows["http / grpc"]
    leftover = [p for p in tmp_path.iterdir() if p.name.startswith("a67-")]
    assert not leftover, leftover  # the controller's data and socket folders are gone
