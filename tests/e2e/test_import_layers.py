"""The layering is a checked contract: `lint-imports` (import-linter, configured in
pyproject.toml) passes on the code, and each of its contracts really fails on a deliberately
wrong import in a copy of the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .controller_process import ROOT

TIMEOUT_S = 120.0


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """`lint-imports` on the `controller` package under `root`, with the project's contracts."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    tool = shutil.which("lint-imports", path=search)
    assert tool, "lint-imports not found: install the dev dependencies (scripts/test does)"
    return subprocess.run(
        [tool, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{ROOT / 'generated'}"},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


def test_the_code_keeps_every_contract() -> None:
    result = lint_imports(ROOT)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


WRONG_IMPORTS = {
    # The domain reaching for gRPC: the "domain imports neither" contract.
    "registry imports grpc": ("registry/index.py", "import grpc", "The domain imports neither"),
    # The store reaching up into the registry: the layers contract.
    "store imports the registry": (
        "store/codec.py",
        "import controller.registry.index",
        "Layers: wiring > edge",
    ),
    # Two modules importing each other: the no-cycles contract.
    "a cycle between siblings": (
        "clock.py",
        "import controller.token_bucket",
        "No import cycles",
    ),
}


@pytest.mark.parametrize("case", WRONG_IMPORTS)
def test_each_contract_fails_on_a_wrong_import(case: str, tmp_path: Path) -> None:
    module, line, contract = WRONG_IMPORTS[case]
    shutil.copytree(ROOT / "controller", tmp_path / "controller")
    path = tmp_path / "controller" / module
    path.write_text(path.read_text() + f"\n{line}  # deliberately wrong\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0, result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith(" BROKEN")]
    assert len(broken) >= 1 and any(contract in line for line in broken), result.stdout
