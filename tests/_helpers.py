"""Helpers shared by every test file: free ports, real HTTP, waiting, helper
processes the leak guard knows about, and the CLI as a user types it.

Fixtures live in conftest.py; plain functions live here, imported by name
(``from _helpers import get``), so that no test file copies one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import httpx
import psutil
from upsonic_server_manager import ServerManager

APPS = Path(__file__).parent / "apps"
CLI = [sys.executable, "-m", "upsonic_server_manager"]

# Every process this test session starts inherits this marker, so the leak
# guard sees only our own leftovers, not another run's on the machine.
SESSION_ENV = "USM_TEST_SESSION"
SESSION_ID = f"{os.getpid()}-{time.time_ns()}"
os.environ[SESSION_ENV] = SESSION_ID


# ---- ports and HTTP ----------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind to port 0)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def get(port: int, path: str = "/", host: str = "127.0.0.1") -> dict:
    """A real HTTP request to the server."""
    h = f"[{host}]" if ":" in host else host
    r = httpx.get(f"http://{h}:{port}{path}", timeout=10)
    r.raise_for_status()
    return r.json()


def can_bind(host: str, port: int) -> bool:
    """What the kernel says: does a bind() to (host, port) succeed?"""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """The library's answer for (host, port), asked by a manager that owns nothing."""
    return ServerManager("usm_hello:app", host, port, "probe")._is_port_in_use()


@contextmanager
def listening_here(port: int, host: str = "127.0.0.1") -> Iterator[socket.socket]:
    """A socket of the test process itself listening on (host, port)."""
    with socket.socket() as s:
        s.bind((host, port))
        s.listen()
        yield s


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# ---- waiting and processes ---------------------------------------------------------------


def wait_until(cond: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


def gone(p: psutil.Process) -> bool:
    """The process has exited (a zombie awaiting its parent counts as gone)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def ours(p: psutil.Process) -> bool:
    """A process started by this test session (it carries our marker)."""
    try:
        return p.environ().get(SESSION_ENV) == SESSION_ID
    except (psutil.Error, OSError):
        return False


def leftover_processes(exclude: set[int]) -> list[psutil.Process]:
    """Live processes of this session other than the test runner and ``exclude``."""
    me = os.getpid()
    out = []
    for p in psutil.process_iter():
        if p.pid == me or p.pid in exclude:
            continue
        try:
            if p.status() == psutil.STATUS_ZOMBIE and p.ppid() != me:
                continue
        except psutil.Error:
            continue
        if ours(p):
            out.append(p)
    return out


PRELOAD = "upsonic_server_manager._preload"


def preloaders(d: str) -> list[psutil.Process]:
    """The warm-start preloaders serving directory `d` (their own command
    line names it; a forked server shows its own)."""
    out = []
    for p in psutil.process_iter():
        try:
            cmd = p.cmdline()
            if PRELOAD in cmd and any(a.startswith(d) for a in cmd):
                out.append(p)
        except psutil.Error:
            pass
    return out


def server_procs(app: str) -> list[psutil.Process]:
    """uvicorn processes for `app` started by this test session."""
    out = []
    for p in psutil.process_iter():
        try:
            if app in p.cmdline() and "uvicorn" in p.cmdline() and ours(p):
                out.append(p)
        except psutil.Error:
            pass
    return out


@contextmanager
def running(argv: list[str], **kw) -> Iterator[subprocess.Popen]:
    """A process for the duration of a ``with`` block: killed, reaped and its
    pipes closed on the way out, whatever the test did to it."""
    p = subprocess.Popen(argv, **kw)
    try:
        yield p
    finally:
        p.kill()
        p.wait()
        for pipe in (p.stdin, p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def python_script(code: str, *args: str, **kw) -> Iterator[subprocess.Popen]:
    """``running`` a ``python -c code args...``, in text mode."""
    with running([sys.executable, "-c", code, *args], text=True, **kw) as p:
        yield p


def spawn_helper(code: str, *args: str, **kw) -> psutil.Popen:
    """A Python helper process (marked so the leak guard knows it)."""
    return psutil.Popen([sys.executable, "-c", code, "usm-helper", *args], **kw)


LISTEN_CODE = """
import socket, sys, time
fam = socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if fam == socket.AF_INET6 and len(sys.argv) > 4:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(sys.argv[4]))
s.bind((sys.argv[2], int(sys.argv[3])))
s.listen()
print('ready', flush=True)
time.sleep(600)
"""


def _ready(p: psutil.Popen) -> psutil.Popen:
    assert p.stdout is not None
    assert p.stdout.readline().strip() == b"ready"
    return p


def listen_helper(host: str, port: int, v6only: int | None = None, **kw) -> psutil.Popen:
    """A Python process that listens on (host, port) and does nothing else."""
    args = [host, str(port)] + ([] if v6only is None else [str(v6only)])
    return _ready(spawn_helper(LISTEN_CODE, *args, stdout=subprocess.PIPE, **kw))


def other_user_listener(port: int) -> psutil.Popen:
    """A listener on 127.0.0.1:port run as `nobody` (needs root to set up)."""
    setpriv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    argv = [*setpriv, sys.executable, "-c", LISTEN_CODE, "usm-helper", "127.0.0.1", str(port)]
    return _ready(psutil.Popen(argv, stdout=subprocess.PIPE))


def kill_helper(p: psutil.Popen) -> None:
    try:
        p.kill()
    except psutil.Error:
        pass
    p.wait(10)
    if p.stdout:
        p.stdout.close()


# ---- the CLI -------------------------------------------------------------------------------


def cli(*args: str, home: Path, timeout: float = 60, out=None, **kw) -> subprocess.CompletedProcess:
    """``python -m upsonic_server_manager args...`` with HOME set, as a user types it.
    Output is captured, or goes to ``out`` (a file: a server started without
    --redirect-output keeps the command's pipe open until it stops)."""
    env = dict(os.environ, HOME=str(home))
    env.update(kw.pop("env", {}))
    streams = {"capture_output": True} if out is None else {"stdout": out, "stderr": out}
    return subprocess.run(
        [*CLI, *args],
        cwd=kw.pop("cwd", None),
        env=env,
        **streams,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )
