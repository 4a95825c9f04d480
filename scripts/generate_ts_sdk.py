"""Regenerate sdk/typescript/gen/ from protos/: TypeScript messages and service descriptors made by
protoc-gen-es (v2), run locally, no remote plugin.

Besides our own files it generates the googleapis files the SDK needs at run time: `google/api`
annotations, http, field_behavior and resource (our files import them, so their generated code
imports theirs) and `google/rpc` status and error_details (the typed errors decode them from the
status trailer). All come from the installed googleapis-common-protos package, as in
generate_protos.py.

    (cd sdk/typescript && npm ci)            # installs protoc-gen-es, pinned by package-lock.json
    python scripts/generate_ts_sdk.py        # rewrite sdk/typescript/gen/
    python scripts/generate_ts_sdk.py --check   # exit 1 if it is stale (the test suite runs it)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from generate_protos import PROTOS, ROOT, differences, googleapis_protos

SDK = ROOT / "sdk" / "typescript"
GENERATED = SDK / "gen"
PLUGIN = SDK / "node_modules" / ".bin" / "protoc-gen-es"
GOOGLE_FILES = (
    "google/api/annotations.proto",
    "google/api/field_behavior.proto",
    "google/api/http.proto",
    "google/api/resource.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
)
# ESM for Node.js needs the `.js` extension on relative imports.
OPTIONS = "target=ts,import_extension=js"


def generate(out: Path, plugin: Path = PLUGIN) -> None:
    import grpc_tools  # imported here so that `--help` works without the dev dependencies

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    ours = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("automator67/**/*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{well_known}",
            f"-I{googleapis_protos()}",
            f"--plugin=protoc-gen-es={plugin}",
            f"--es_out={out}",
            f"--es_opt={OPTIONS}",
            *ours,
            *GOOGLE_FILES,
        ],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    parser.add_argument(
        "--against", type=Path, default=GENERATED, help="the tree to check or rewrite"
    )
    args = parser.parse_args()
    if not PLUGIN.exists():
        print(f"{PLUGIN} is missing: run `npm ci` in {SDK}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gen"
        out.mkdir()
        generate(out)
        if args.check:
            stale = (
                differences(out, args.against)
                if args.against.is_dir()
                else [f"missing: {args.against}"]
            )
            for line in stale:
                print(line, file=sys.stderr)
            return 1 if stale else 0
        shutil.rmtree(args.against, ignore_errors=True)
        shutil.copytree(out, args.against)
    return 0


if __name__ == "__main__":
    sys.exit(main())
