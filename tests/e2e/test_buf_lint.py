"""The .proto files are a public contract: `buf lint` (STANDARD rules) passes on them, and it
really does fail on a file that breaks a rule."""

from __future__ import annotations

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


def buf_check(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Runs `scripts/buf_check.py` (buf on a descriptor image of the protos, offline)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "buf_check.py"), *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BUF_TIMEOUT_S,
        check=False,
    )


def test_the_protos_are_lint_clean() -> None:
    result = buf_check("lint")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_lint_fails_on_a_camel_case_field(tmp_path: Path) -> None:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    (copy / "automator67" / "v1" / "misnamed.proto").write_text(CAMEL_CASE_FIELD)

    result = buf_check("lint", "--protos", copy)

    assert result.returncode != 0
    problems = result.stdout.strip().splitlines()
    assert problems, result.stderr
    assert all("misnamed.proto" in line for line in problems), problems
    assert any("camelCase" in line and "lower_snake_case" in line for line in problems), problems


def test_the_contract_has_no_breaking_change_since_the_baseline() -> None:
    result = buf_check("breaking")

    assert result.returncode == 0, result.stdout + result.stderr


def _edited_protos(tmp_path: Path, old: str, new: str) -> Path:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    node = copy / "automator67" / "v1" / "node.proto"
    text = node.read_text()
    assert old in text
    node.write_text(text.replace(old, new))
    return copy


def test_breaking_fails_when_a_field_is_removed(tmp_path: Path) -> None:
    copy = _edited_protos(
        tmp_path, "  string region = 4 [(google.api.field_behavior) = OPTIONAL];\n", ""
    )

    result = buf_check("breaking", "--protos", copy)

    assert result.returncode != 0
    assert 'field "4" with name "region" on message "Node" was deleted' in result.stdout


def test_breaking_fails_when_a_field_is_renumbered(tmp_path: Path) -> None:
    copy = _edited_protos(tmp_path, "  string region = 4 [", "  string region = 40 [")

    result = buf_check("breaking", "--protos", copy)

    assert result.returncode != 0
    assert '"Node"' in result.stdout and "region" in result.stdout
