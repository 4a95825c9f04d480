"""generated/ must be exactly what scripts/generate_protos.py makes of protos/."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    stale = "generated/ is stale; run scripts/generate_protos.py\n"
    assert result.returncode == 0, stale + result.stderr
