"""The TypeScript SDK (sdk/typescript/): its generated code is fresh, and its own tests (node's
test runner, against real controller processes they start) pass.

`npm ci` installs the packages pinned by package-lock.json once; a stamp in node_modules records
the lockfile it installed, so later runs skip it until the lockfile changes. Skipped only when
`node` or `npm` is missing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SDK = ROOT / "sdk" / "typescript"
LOCKFILE = SDK / "package-lock.json"
STAMP = SDK / "node_modules" / ".automator67-lock-sha256"
GENERATE = ROOT / "scripts" / "generate_ts_sdk.py"
NPM_CI_TIMEOUT_S = 300
NPM_TEST_TIMEOUT_S = 300

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are needed for the TypeScript SDK tests (Node.js 20 or later)",
)


def run(args: list[str], timeout_s: float, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=SDK,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def failure(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout[-8000:]}\n{result.stderr[-8000:]}"


@pytest.fixture(scope="module")
def installed() -> Iterator[None]:
    """sdk/typescript/node_modules as package-lock.json pins it."""
    lock = hashlib.sha256(LOCKFILE.read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != lock:
        npm = shutil.which("npm")
        assert npm is not None
        result = run([npm, "ci", "--no-audit", "--no-fund"], NPM_CI_TIMEOUT_S)
        assert result.returncode == 0, "npm ci failed: " + failure(result)
        STAMP.write_text(lock)
    yield


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + 60)
def test_generated_typescript_matches_the_protos(installed: None) -> None:
    result = run([sys.executable, str(GENERATE), "--check"], 60)
    stale = "sdk/typescript/gen/ is stale; run scripts/generate_ts_sdk.py\n"
    assert result.returncode == 0, stale + result.stderr


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + 60)
def test_the_staleness_check_fails_on_a_changed_file(installed: None, tmp_path: Path) -> None:
    copy = tmp_path / "gen"
    shutil.copytree(SDK / "gen", copy)
    edited = copy / "automator67" / "v1" / "node_pb.ts"
    edited.write_text(edited.read_text().replace("Registered, but", "Registered but"))
    result = run([sys.executable, str(GENERATE), "--check", "--against", str(copy)], 60)
    assert result.returncode == 1, failure(result)
    assert "node_pb.ts" in result.stderr


@pytest.mark.timeout(NPM_CI_TIMEOUT_S + NPM_TEST_TIMEOUT_S)
def test_the_typescript_sdk_suite_passes(installed: None) -> None:
    npm = shutil.which("npm")
    assert npm is not None
    # The SDK's tests start controllers with this interpreter (the one running pytest).
    result = run([npm, "test"], NPM_TEST_TIMEOUT_S, AUTOMATOR67_PYTHON=sys.executable)
    assert result.returncode == 0, "npm test failed: " + failure(result)
