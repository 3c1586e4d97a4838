"""What _launch.py (servers on a held socket) relies on in uvicorn's private API.

The package caps uvicorn below the next untested minor release in
pyproject.toml. When a new uvicorn is tried (raise the cap, install it, run
this file), this test names each method, parameter or attribute it no longer
has, rather than leaving a held-socket start to hang or a reload to drop
connections. The probe (tests/_uvicorn_probe.py) runs in a fresh interpreter:
importing _launch wraps uvicorn's Server methods in the importing process.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

PROBE = Path(__file__).with_name("_uvicorn_probe.py")


def test_uvicorn_still_has_what_launch_relies_on() -> None:
    done = subprocess.run(
        [sys.executable, str(PROBE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"the uvicorn probe failed to run:\n{done.stderr}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    missing = result["missing"]
    assert not missing, (
        f"uvicorn {result['version']} no longer provides what "
        "python/upsonic_server_manager/_launch.py relies on:\n  - "
        + "\n  - ".join(missing)
        + "\nAdapt _launch.py, or keep the upper bound on uvicorn in pyproject.toml below "
        f"{result['version']}."
    )


def test_uvicorn_requirement_has_an_upper_bound() -> None:
    requires = importlib.metadata.requires("upsonic-server-manager") or []
    uvicorn = [r for r in requires if r.replace(" ", "").startswith("uvicorn")]
    assert uvicorn, f"no uvicorn requirement in {requires}"
    assert "<" in uvicorn[0], (
        f"the uvicorn requirement {uvicorn[0]!r} has no upper bound; _launch.py uses "
        "uvicorn's private methods, so each new minor release is tried first"
    )
