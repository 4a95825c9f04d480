"""`buf lint` and `buf breaking` on the v1 contract, offline.

Our protos import googleapis' `google/api` annotations, which buf would fetch from the Buf
Schema Registry (unreachable here). So this script compiles protos/ into a descriptor image with
protoc, which finds those imports in the installed googleapis-common-protos package, and hands
buf the image, restricted to our own files (`--path automator67`) and configured by buf.yaml.

    python scripts/buf_check.py lint               # STANDARD lint rules
    python scripts/buf_check.py breaking           # against protos/baseline/v1.binpb (FILE rules)
    python scripts/buf_check.py freeze             # rewrite the baseline (only when v1 is cut)

`--protos DIR` checks another tree (the tests use it to show that each check really fails).
The baseline is the contract as released: after it, every change must be additive."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from generate_protos import PROTOS, ROOT, protoc

BASELINE = PROTOS / "baseline" / "v1.binpb"
OUR_FILES = "automator67"


def image(protos: Path, out: Path) -> Path:
    """Compiles `protos` into a descriptor image (with imports and comments) at `out`."""
    subprocess.run(
        protoc(protos, f"--descriptor_set_out={out}", "--include_imports", "--include_source_info"),
        check=True,
    )
    return out


def buf(*args: str) -> int:
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    found = shutil.which("buf", path=search)
    if found is None:
        print("buf not found: install the dev dependencies (./scripts/test does)", file=sys.stderr)
        return 2
    config = (ROOT / "buf.yaml").read_text()
    return subprocess.run([found, *args, "--path", OUR_FILES, "--config", config]).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("check", choices=("lint", "breaking", "freeze"))
    parser.add_argument("--protos", type=Path, default=PROTOS, help="the tree to check")
    parser.add_argument("--baseline", type=Path, default=BASELINE, help="the released contract")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        current = image(args.protos, Path(tmp) / "current.binpb")
        if args.check == "lint":
            return buf("lint", str(current))
        if args.check == "breaking":
            return buf("breaking", str(current), "--against", str(args.baseline))
        args.baseline.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(current, args.baseline)
        print(f"froze the contract in {args.baseline}")
        return 0


if __name__ == "__main__":
    sys.exit(main())
