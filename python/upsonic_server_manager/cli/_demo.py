"""`demo`: start the bundled demo app, request it, show its status, stop it."""

from __future__ import annotations

import argparse
import os
import time

from .. import ServerManager
from .._cli_output import columns, render_table, run_with_spinner, status_row
from ._common import EXIT_ERROR, EXIT_OK

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import TextIO


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    import socket
    import tempfile
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="upsonic-demo-") as tmp:
        m = ServerManager(
            "upsonic_server_manager.demo_app:app",
            "127.0.0.1",
            port,
            "demo",
            pid_dir=tmp,
            log_dir=os.path.join(tmp, "logs"),
        )
        try:
            took = run_with_spinner(
                "starting demo", lambda: m.start(redirect_output=True), out, True
            )
            import importlib.util

            kind = "FastAPI" if importlib.util.find_spec("fastapi") else "plain ASGI"
            out.write(
                f"1. started the bundled demo app ({kind}) on http://127.0.0.1:{port} "
                f"(pid {m.status().pid}) in {took * 1000:.0f} ms\n"
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as r:
                body = r.read().decode()
                out.write(f"2. GET /hello -> {r.status} {body}\n")
            out.write("3. status:\n")
            st = m.status()
            out.write(render_table([status_row(st, st.cpu_percent)], columns(None)) + "\n")
        finally:
            t0 = time.monotonic()
            m.stop()
        free = not m.port_holders()
        out.write(
            f"4. stopped it in {(time.monotonic() - t0) * 1000:.0f} ms; "
            f"port {port} is {'free' if free else 'STILL HELD'}, running={m.is_running()}\n"
        )
        return EXIT_OK if free else EXIT_ERROR
