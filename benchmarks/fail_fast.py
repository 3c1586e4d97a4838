"""How long a start that cannot succeed takes to fail, and what it says
first (docs/FAILURES.md): two workers of an app that cannot be imported, or
whose lifespan fails, plain and on a held socket (port 0).

    python benchmarks/fail_fast.py [--rounds 3] [--start-timeout 20]

Prints a table: median seconds to StartError over the rounds, and the first
line of the message. Before failing at the first worker's failure, these
waited for start_timeout (or uvicorn's own worker health checks)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from upsonic_server_manager import ServerManager, StartError

APPS = Path(__file__).resolve().parent.parent / "tests" / "apps"
CASES = [
    ("plain, 2 workers, import error", {"hold_socket": False}, "usm_broken:app"),
    ("port 0, 2 workers, import error", {}, "usm_broken:app"),
    ("plain, 2 workers, lifespan error", {"hold_socket": False}, "usm_lifespan_fails:app"),
    ("port 0, 2 workers, lifespan error", {}, "usm_lifespan_fails:app"),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--start-timeout", type=float, default=20.0)
    a = p.parse_args()
    os.environ["PYTHONPATH"] = str(APPS)
    d = tempfile.mkdtemp(prefix="usm-failfast-")
    print("| case | median to StartError | first line of the message |")
    print("|---|---|---|")
    for label, kw, app in CASES:
        took, first = [], ""
        for _ in range(a.rounds):
            port = 0 if not kw else _free_port()
            m = ServerManager(
                app, "127.0.0.1", port, "failfast", workers=2, pid_dir=d, log_dir=d,
                start_timeout=a.start_timeout, **kw,
            )  # fmt: skip
            t0 = time.monotonic()
            try:
                m.start(redirect_output=True)
            except StartError as e:
                took.append(time.monotonic() - t0)
                first = str(e).splitlines()[0]
            finally:
                m.stop()
        med = f"{statistics.median(took):.1f} s" if took else "(started?)"
        print(f"| {label} | {med} | {first[:110]} |")
        sys.stdout.flush()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
