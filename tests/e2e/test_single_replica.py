"""With the embedded SQLite store there is exactly one replica: a second controller on the same
data dir refuses to start, with one clear line naming the first one's pid, and changes nothing."""

from __future__ import annotations

import subprocess
import sys

from .conftest import StartController
from .controller_process import ROOT, controller_env

RUN_TIMEOUT_S = 30.0
SERVE = [sys.executable, "-m", "controller", "serve", "--port", "0"]


def test_a_second_controller_on_the_same_data_dir_refuses_to_start(
    start_controller: StartController,
) -> None:
    first = start_controller()
    database = first.data_dir / "controller.db"
    before = database.stat().st_mtime_ns

    second = subprocess.run(
        [*SERVE, "--data-dir", str(first.data_dir)],
        cwd=ROOT,
        env=controller_env(LOG_LEVEL="info"),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"another controller (pid {first.pid})" in lines[0]
    assert "Traceback" not in second.stderr
    assert database.stat().st_mtime_ns == before
    assert first.terminate() == 0  # the first one still serves, and stops cleanly


def test_the_data_dir_is_free_again_once_the_controller_stops(
    start_controller: StartController,
) -> None:
    first = start_controller()
    first.terminate()
    again = first.restart()  # raises if the lock were still held: the start would fail
    assert again.terminate() == 0
