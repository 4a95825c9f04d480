"""The .proto files are a public contract: `buf lint` (STANDARD rules) passes on them, and it
really does fail on a file that breaks a rule."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .controller_process import ROOT

BUF_TIMEOUT_S = 60.0

CAMEL_CASE_FIELD = """\
syntax = "proto3";

package automator67.v1;

option go_package = "github.com/automator67/controller/gen/go/automator67/v1;automator67v1";

// A message that breaks FIELD_LOWER_SNAKE_CASE on purpose.
message Misnamed {
  // Optional. Should be `camel_case`.
  string camelCase = 1;
}
"""


def buf_lint(root: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """Runs `buf lint` in `root`, with the buf of this venv (the buf-bin dev dependency)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    buf = shutil.which("buf", path=search)
    assert buf, "buf not found: install the dev dependencies (scripts/test does)"
    return subprocess.run(
        [buf, "lint"],
        cwd=root,
        env={**os.environ, "BUF_CACHE_DIR": str(cache)},
        capture_output=True,
        text=True,
        timeout=BUF_TIMEOUT_S,
        check=False,
    )


def test_the_protos_are_lint_clean(tmp_path: Path) -> None:
    result = buf_lint(ROOT, tmp_path / "buf-cache")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_lint_fails_on_a_camel_case_field(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "protos", copy / "protos")
    shutil.copy(ROOT / "buf.yaml", copy / "buf.yaml")
    (copy / "protos" / "automator67" / "v1" / "misnamed.proto").write_text(CAMEL_CASE_FIELD)

    result = buf_lint(copy, tmp_path / "buf-cache")

    assert result.returncode != 0
    problems = result.stdout.strip().splitlines()
    assert problems, result.stderr
    assert all("misnamed.proto" in line for line in problems), problems
    assert any("camelCase" in line and "lower_snake_case" in line for line in problems), problems
