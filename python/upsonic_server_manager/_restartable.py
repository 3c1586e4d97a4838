"""The restart pre-check: what would make a restart fail, checked before a
server is stopped (the CLI's `restart`, `restart --all`)."""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Optional

    from ._manager import ServerManager


# Imports the app as uvicorn will (the working directory first on the path)
# and looks the attribute up: a missing file, a syntax error, an exception at
# import time and a missing attribute all show here, before anything stops.
_IMPORTABLE = (
    "import importlib, sys\n"
    "sys.path.insert(0, '')\n"
    "module, _, attr = sys.argv[1].partition(':')\n"
    "try:\n"
    "    obj = importlib.import_module(module)\n"
    "    for part in attr.split('.'):\n"
    "        obj = getattr(obj, part)\n"
    "except BaseException as e:\n"
    "    sys.exit(f'{type(e).__name__}: {e}')\n"
)


def why_not_restartable(m: ServerManager) -> Optional[str]:
    """What would make a restart fail, checked before the server is stopped:
    the app's module must import from the recorded directory and environment
    (as uvicorn will import it), and the port must be free or this server's."""
    import subprocess

    cwd = m.cwd or os.getcwd()
    if ":" not in m.app_path:
        return f"{m.app_path!r} is not in uvicorn's module:attribute form"
    if not os.path.isdir(cwd):
        return f"its working directory {cwd} does not exist"
    check = subprocess.run(
        [sys.executable, "-c", _IMPORTABLE, m.app_path],
        cwd=cwd,
        env={**os.environ, **m.env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if check.returncode != 0:
        why = (check.stderr.strip().splitlines() or ["it failed"])[-1]
        return f"{m.app_path!r} cannot be imported from {cwd}: {why}"
    st = m.status()
    # Its supervisor holds the socket too (and hands it to the next run).
    ours = {p for p in [st.pid, *st.workers, st.supervisor_pid] if p is not None}
    others = [h for h in m.port_holders() if h.pid not in ours]
    if others:
        h = others[0]
        owner = f", the managed server {h.server!r}" if h.server else ""
        return f"port {m.port} is held by pid {h.pid} ({h.name}, user {h.user}){owner}"
    return None
