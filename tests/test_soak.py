"""The shortened soak and load run (the full one is `python benchmarks/soak.py`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def test_short_soak_load_and_group(home):
    r = subprocess.run(
        [sys.executable, str(SCRIPT), "--cycles", "15", "--load-seconds", "4", "--group", "16"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("PASS"), r.stdout
