"""Shared fixtures: real apps, free ports, a private HOME, and a guard that
fails any test leaving a process behind."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest

APPS = Path(__file__).parent / "apps"
LAUNCH_ENV = "UPSONIC_SERVER_LAUNCH_ID"
# Every process this test session starts inherits this marker, so the leak
# guard below sees only our own leftovers, not another run's on the machine.
SESSION_ENV = "USM_TEST_SESSION"
SESSION_ID = f"{os.getpid()}-{time.time_ns()}"
os.environ[SESSION_ENV] = SESSION_ID


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


def wait_until(cond, timeout: float = 10.0, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def _ours(p: psutil.Process) -> bool:
    """A process started by this test session (it carries our marker)."""
    try:
        return p.environ().get(SESSION_ENV) == SESSION_ID
    except (psutil.Error, OSError):
        return False


def leftover_processes(exclude: set[int]) -> list[psutil.Process]:
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
        if _ours(p):
            out.append(p)
    return out


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fails the test if it leaves a server or helper running (and kills it)."""
    before = {p.pid for p in leftover_processes(set())}
    yield
    time.sleep(0.01)
    left = leftover_processes(before)
    if left:
        desc = []
        for p in left:
            try:
                desc.append(f"{p.pid} {p.cmdline()}")
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        pytest.fail("test left processes running: " + "; ".join(desc))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HOME (where PID files go) and working directory with the apps."""
    h = tmp_path / "home"
    h.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("HOME", str(h))
    # Servers import the test apps through PYTHONPATH and write their logs
    # under a private working directory, never into the repository.
    monkeypatch.setenv("PYTHONPATH", str(APPS))
    monkeypatch.chdir(work)
    monkeypatch.delenv("UPSONIC_WORKERS_AMOUNT", raising=False)
    return h


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def managers() -> Iterator[list]:
    """Managers registered here are stopped after the test even if it fails."""
    ms: list = []
    yield ms
    for m in reversed(ms):
        try:
            m.stop()
        except Exception:  # noqa: BLE001
            pass


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


def listen_helper(host: str, port: int, v6only: int | None = None, **kw) -> psutil.Popen:
    """A Python process that listens on (host, port) and does nothing else."""
    args = [host, str(port)] + ([] if v6only is None else [str(v6only)])
    import subprocess

    p = spawn_helper(LISTEN_CODE, *args, stdout=subprocess.PIPE, **kw)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == b"ready"
    return p


def kill_helper(p: psutil.Popen) -> None:
    try:
        p.kill()
    except psutil.Error:
        pass
    p.wait(10)
    if p.stdout:
        p.stdout.close()


def gone(p: psutil.Process) -> bool:
    """The process has exited (a zombie awaiting its parent counts as gone)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def other_user_listener(port: int) -> psutil.Popen:
    """A listener on 127.0.0.1:port run as `nobody` (needs root to set up)."""
    import subprocess

    code = (
        f"import socket,time;s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();"
        "print('ready',flush=True);time.sleep(600)"
    )
    p = psutil.Popen(
        [
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            sys.executable,
            "-c",
            code,
            "usm-helper",
        ],
        stdout=subprocess.PIPE,
    )
    assert p.stdout is not None
    assert p.stdout.readline().strip() == b"ready"
    return p


def has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False
