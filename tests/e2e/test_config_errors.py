"""A bad setting stops `automator67 serve` before it starts: exit code 2 and one clear line on
stderr that names the setting."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .controller_process import ROOT, controller_env

RUN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class BadSetting:
    args: list[str]
    named: str  # the flag or env var the message must name
    env: dict[str, str] = field(default_factory=dict)


BAD_SETTINGS = {
    "a port above 65535": BadSetting(["--port", "70000"], "PORT"),
    "a port that is not a number": BadSetting(["--port", "http"], "--port"),
    "a port from the environment above 65535": BadSetting([], "PORT", {"PORT": "70000"}),
    "an unknown log level": BadSetting([], "LOG_LEVEL", {"LOG_LEVEL": "loud"}),
    "a host that is not an address": BadSetting(["--host", "example.com"], "A67_HOST"),
    "a negative shutdown grace": BadSetting(["--shutdown-grace-s", "-1"], "A67_SHUTDOWN_GRACE_S"),
    "a store url of an unknown kind": BadSetting(
        [], "A67_STORE_URL", {"A67_STORE_URL": "mysql://db/a67"}
    ),
}


@pytest.mark.parametrize("case", list(BAD_SETTINGS))
def test_a_bad_setting_exits_2_with_one_line_naming_it(case: str, tmp_path: Path) -> None:
    bad = BAD_SETTINGS[case]
    data_dir = tmp_path / "data"
    env = controller_env(**{"LOG_LEVEL": "info", **bad.env})

    result = subprocess.run(
        [sys.executable, "-m", "controller", "serve", "--data-dir", str(data_dir), *bad.args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert bad.named in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert not data_dir.exists()
