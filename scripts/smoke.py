"""Smoke test of an installed upsonic-server-manager (a wheel or an sdist build).

Run by scripts/release.sh, .ci/run and the release workflow with the
interpreter of a fresh virtual environment holding the package, FastAPI and
uvicorn, from outside the source tree:

    python scripts/smoke.py [--no-rust]

It writes a small FastAPI app to a temporary directory, then for a server on
a fixed free port (the original's ``python -m uvicorn`` command line) and one
on port 0 with a held socket (our launcher, which relies on uvicorn's private
methods): starts it with ``ServerManager``, requests it over HTTP, stops it
and checks that the port is free again and that no process is left. Exits
non-zero, saying what failed, on any failure. ``--no-rust`` also checks that
no Rust toolchain is on PATH (the wheel must not need one).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

APP = """
import os
from fastapi import FastAPI

app = FastAPI()


@app.get("/smoke")
def smoke() -> dict:
    return {"ok": True, "pid": os.getpid()}
"""


def fail(message: str) -> None:
    sys.exit(f"smoke: FAILED: {message}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes only once reaped.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def check_installed() -> str:
    import upsonic_server_manager as usm
    from upsonic_server_manager import _core

    here = Path(usm.__file__).resolve()
    if not here.is_relative_to(Path(sys.prefix).resolve()):
        fail(f"imported {here}, not the package installed in {sys.prefix}")
    version = importlib.metadata.version("upsonic-server-manager")
    if usm.__version__ != version:
        fail(f"__version__ {usm.__version__!r} != installed metadata {version!r}")
    return f"{version} ({Path(_core.__file__).name})"


def exercise(workdir: Path, name: str, port: int, hold_socket: bool) -> str:
    from upsonic_server_manager import ServerManager

    manager = ServerManager(
        "smoke_app:app",
        "127.0.0.1",
        port,
        name,
        cwd=workdir,
        pid_dir=workdir,
        log_dir=workdir / "logs",
        hold_socket=hold_socket,
    )
    began = time.monotonic()
    manager.start(redirect_output=True)
    try:
        started_ms = (time.monotonic() - began) * 1000
        port = manager.port  # the real one for port 0
        pid = manager.status().pid
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/smoke", timeout=10) as r:
            body = json.loads(r.read())
            status = r.status
        if status != 200 or body.get("ok") is not True:
            fail(f"{name}: GET /smoke answered {status} {body!r}")
        if body["pid"] != pid:
            fail(f"{name}: served by pid {body['pid']}, but status() says {pid}")
    finally:
        manager.stop()
    if manager.is_running():
        fail(f"{name}: still running after stop()")
    if pid is not None and pid_alive(pid):
        fail(f"{name}: server process {pid} outlived stop()")
    if not port_is_free(port):
        fail(f"{name}: port {port} still taken after stop()")
    kind = "held socket, port 0" if hold_socket else "fixed port"
    return f"{name} ({kind}): started in {started_ms:.0f} ms on port {port}, 200 OK, stopped, freed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-rust", action="store_true", help="also check that cargo and rustc are not on PATH"
    )
    args = parser.parse_args()
    if args.no_rust:
        for tool in ("cargo", "rustc"):
            if shutil.which(tool):
                fail(f"{tool} is on PATH ({shutil.which(tool)}); the check needs it absent")
    installed = check_installed()
    print(f"smoke: Python {platform.python_version()}, upsonic-server-manager {installed}")
    with tempfile.TemporaryDirectory(prefix="usm-smoke-") as tmp:
        workdir = Path(tmp)
        (workdir / "smoke_app.py").write_text(APP)
        for line in (
            exercise(workdir, "smoke", free_port(), hold_socket=False),
            exercise(workdir, "smoke-held", 0, hold_socket=True),
        ):
            print(f"smoke: {line}")
    print("smoke: OK")


if __name__ == "__main__":
    main()
