"""Build the Python SDK's wheel: sdk/python (the hand-written `automator67`) plus the generated
`automator67.v1` (generated/automator67/v1), staged together in a temporary folder and built
with `pip wheel`. Needs nothing beyond pip and setuptools (>= 70.1, which builds wheels itself);
prints the wheel's path.

    python scripts/build_python_sdk.py [--out dist/]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "python"
GENERATED_V1 = ROOT / "generated" / "automator67" / "v1"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info")


def stage(folder: Path) -> Path:
    """Copies the SDK's sources and the generated code into `folder`; returns the project."""
    project = folder / "automator67-sdk"
    shutil.copytree(SDK, project, ignore=IGNORE)
    shutil.copytree(GENERATED_V1, project / "automator67" / "v1", ignore=IGNORE)
    return project


def can_build_offline() -> bool:
    """Whether this Python's setuptools can build the wheel without build isolation (which
    would fetch setuptools from the package index)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("setuptools")
    except PackageNotFoundError:
        return False
    major, minor = (int(part) for part in installed.split(".")[:2])
    return (major, minor) >= (70, 1)


def build(out: Path) -> Path:
    """Builds the wheel into `out` and returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="a67-sdk-") as tmp:
        project = stage(Path(tmp))
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet"]
        command += ["--disable-pip-version-check", "--wheel-dir", tmp + "/wheels"]
        if can_build_offline():
            command.append("--no-build-isolation")
        subprocess.run([*command, str(project)], check=True)
        (wheel,) = Path(tmp, "wheels").glob("automator67-*.whl")
        target = out / wheel.name
        shutil.copy2(wheel, target)
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="folder of the wheel")
    args = parser.parse_args()
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
