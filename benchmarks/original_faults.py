"""Runs the reliability cases against upsonic 0.45.0's ServerManager and
prints what it does, for the last column of docs/RELIABILITY.md.

Cases that would signal a process group derived from a hostile PID file
(0, 1, -1) run with os.kill/os.killpg intercepted and recorded instead of
sent: on this machine PID 1 is the sandbox's init.

    bash benchmarks/run.sh  # once, to build the environment, then:
    benchmarks/.env/bin/python benchmarks/original_faults.py
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "tests" / "apps"
os.environ["PYTHONPATH"] = f"{APPS}{os.pathsep}{HERE}"
sys.path.insert(0, str(APPS))
sys.path.insert(0, str(HERE))

from _original import load_original_module  # noqa: E402


def load_original():
    return load_original_module()


ORIG = load_original()
SM = ORIG.ServerManager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def uvicorns(app: str) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if b"uvicorn" in cmd and app.encode() in cmd:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(int(pid))
    return out


def kill_all(app: str) -> None:
    for pid in uvicorns(app):
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


class Intercept:
    """Records os.kill/os.killpg calls instead of sending them."""

    def __enter__(self):
        self.calls: list[str] = []
        self._kill, self._killpg = os.kill, os.killpg
        os.kill = lambda pid, sig: self.calls.append(f"kill({pid}, {sig})")
        os.killpg = lambda pg, sig: self.calls.append(f"killpg({pg}, {sig})")
        return self

    def __exit__(self, *exc):
        os.kill, os.killpg = self._kill, self._killpg


def outcome(fn) -> str:
    try:
        r = fn()
        return f"returns {r!r}"
    except BaseException as e:  # noqa: BLE001
        return f"raises {type(e).__name__}: {str(e)[:120]}"


def case(title: str):
    def deco(fn):
        CASES.append((title, fn))
        return fn

    return deco


CASES: list = []


@case("log directory under a regular file")
def log_dir_file(tmp: Path) -> str:
    (tmp / "logs").write_text("x")  # the original always uses ./logs
    os.chdir(tmp)
    m = SM("usm_hello:app", "127.0.0.1", free_port(), "o1")
    r = outcome(lambda: m.start(redirect_output=True))
    left = uvicorns("usm_hello:app")
    kill_all("usm_hello:app")
    return f"{r}; servers left running: {len(left)}"


@case("PID directory is a file (HOME points at a file)")
def pid_dir_file(tmp: Path) -> str:
    f = tmp / "home-file"
    f.write_text("")
    os.environ["HOME"] = str(f)
    m = SM("usm_hello:app", "127.0.0.1", free_port(), "o2")
    r = outcome(m.start)
    left = uvicorns("usm_hello:app")
    kill_all("usm_hello:app")
    return f"{r}; servers left running: {len(left)}"


@case("PID file content (hostile)")
def bad_records(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    res = []
    for label, content in [
        ("empty", ""),
        ("garbage", "\x00garbage"),
        ("-1", "-1"),
        ("0", "0"),
        ("1", "1"),
        ("too large", "9" * 20),
        ("two numbers", "123 456"),
        ("4 MiB of digits", "7" * (4 << 20)),
    ]:
        m = SM("usm_hello:app", "127.0.0.1", free_port(), "o3")
        with open(m._pid_file, "w") as fh:
            fh.write(content)
        with Intercept() as ic:
            rp = outcome(m._read_pid)
            ir = outcome(m.is_running)
            with open(m._pid_file, "w") as fh:
                fh.write(content)
            st = outcome(m.stop)
        res.append(
            f"{label}: _read_pid {rp}, is_running {ir}, stop {st}"
            + (f", would send {ic.calls}" if ic.calls else "")
        )
    return " | ".join(res)


@case("lock left by a dead process / four concurrent starts")
def concurrent(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    port = free_port()
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        s = importlib.util.spec_from_file_location("o", {str(Path(ORIG.__file__))!r})
        o = importlib.util.module_from_spec(s); s.loader.exec_module(o)
        m = o.ServerManager("usm_hello:app", "127.0.0.1", {port}, "o4")
        try:
            m.start(); print("ok", m._read_pid(), flush=True)
        except Exception as e:
            print("err", e, flush=True)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outs = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.wait()
        p.stdout.close()
    alive = uvicorns("usm_hello:app")
    kill_all("usm_hello:app")
    return f"results {outs}; uvicorn processes alive after: {len(alive)} (no lock exists)"


@case("grandchild that left the group (setsid)")
def escaper(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    os.environ["USM_ESCAPER_PIDFILE"] = str(tmp / "esc.pid")
    m = SM("usm_escaper:app", "127.0.0.1", free_port(), "o5")
    m.start()
    esc = int((tmp / "esc.pid").read_text())
    m.stop()
    time.sleep(0.5)
    alive = os.path.exists(f"/proc/{esc}")
    if alive:
        os.kill(esc, signal.SIGKILL)
    return f"after stop(), the escaped grandchild is {'still running' if alive else 'gone'}"


@case("server exits at a random moment during readiness")
def flaky(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    m = SM("usm_flaky:app", "127.0.0.1", free_port(), "o6")
    return outcome(lambda: m.start(redirect_output=True))


@case("port taken by someone else between the check and the launch")
def race(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    os.environ["USM_SLOW_SECONDS"] = "1.5"
    port = free_port()
    thief = socket.socket()
    thief.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    def steal():
        time.sleep(0.5)
        thief.bind(("127.0.0.1", port))
        thief.listen()

    t = threading.Thread(target=steal)
    t.start()
    m = SM("usm_slow:app", "127.0.0.1", port, "o7")
    r = outcome(m.start)
    t.join()
    time.sleep(2.5)
    running = outcome(m.is_running)
    alive = uvicorns("usm_slow:app")
    kill_all("usm_slow:app")
    thief.close()
    return f"start {r}; then is_running {running}; its uvicorn alive: {bool(alive)}"


@case("server that ignores SIGTERM")
def stubborn(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    os.environ["USM_IGNORE_TERM"] = "1"
    m = SM("usm_stubborn:app", "127.0.0.1", free_port(), "o8")
    m.start()
    t0 = time.monotonic()
    r = outcome(m.stop)
    took = time.monotonic() - t0
    time.sleep(0.3)
    left = uvicorns("usm_stubborn:app")
    kill_all("usm_stubborn:app")
    return f"stop {r} after {took:.1f} s; left running: {len(left)}"


@case("HOME relative")
def home_relative(tmp: Path) -> str:
    os.environ["HOME"] = "relative/dir"
    return f"PID file at {SM('usm_hello:app', '127.0.0.1', 1, 'o9')._pid_file!r} (cwd-relative)"


@case("host given as ::1 / ::")
def hosts(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    res = []
    for host in ("::1", "::", "localhost"):
        m = SM("usm_hello:app", host, free_port(), "o10")
        r = outcome(m.start)
        res.append(f"{host}: {r}")
        m.stop()
        kill_all("usm_hello:app")
    return " | ".join(res)


@case("name that escapes the PID directory")
def escape_name(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp / "home")
    (tmp / "home").mkdir()
    m = SM("usm_hello:app", "127.0.0.1", 1, "../../escaped")
    return f"PID file path {os.path.normpath(m._pid_file)!r} (outside HOME)"


@case("soak: 50 start/stop cycles with redirected output")
def soak(tmp: Path) -> str:
    os.environ["HOME"] = str(tmp)
    os.chdir(tmp)
    port = free_port()
    m = SM("usm_hello:app", "127.0.0.1", port, "o11")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        m.start(redirect_output=True)
        m.stop()
        time.sleep(0.05)
    after = len(os.listdir("/proc/self/fd"))
    return f"descriptors {before} -> {after}"


def main() -> None:
    cwd = os.getcwd()
    home = os.environ.get("HOME")
    for title, fn in CASES:
        with tempfile.TemporaryDirectory() as d:
            try:
                result = fn(Path(d))
            except BaseException as e:  # noqa: BLE001
                result = f"(harness) {type(e).__name__}: {e}"
            finally:
                os.chdir(cwd)
                if home is not None:
                    os.environ["HOME"] = home
        print(f"- {title}: {result}", flush=True)


if __name__ == "__main__":
    main()
