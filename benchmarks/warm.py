"""Warm start against cold, in one run on this machine: the time until the
server is ready (start() returns; for bare uvicorn, until its port accepts a
connection), over N starts each, interleaved so that drift on a shared
machine hits every contender alike; then the memory (PSS) of a warm server
against a cold one. Prints a Markdown table.

    python benchmarks/warm.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).parent
APP = "hello_app:app"
os.chdir(HERE)  # so `hello_app` is importable by every server
sys.path.insert(0, str(HERE))
WARM_DIR = tempfile.mkdtemp(prefix="usmwb")
os.environ["UPSONIC_WARM_DIR"] = WARM_DIR
os.environ["PYTHONPATH"] = str(HERE)

from upsonic_server_manager import ServerManager  # noqa: E402

UVICORN_ARGS = ["--log-level", "error", "--no-access-log"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def bare_uvicorn() -> float:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", APP, "--port", str(port), *UVICORN_ARGS]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, start_new_session=True)
    while not listening(port):
        time.sleep(0.0005)
    took = time.perf_counter() - t0
    os.killpg(p.pid, signal.SIGTERM)
    p.wait()
    return took


def managed(**kw: object) -> Callable[[], float]:
    def run() -> float:
        port = 0 if kw.get("hold_socket") else free_port()
        m = ServerManager(APP, "127.0.0.1", port, "warmbench", uvicorn_args=UVICORN_ARGS, **kw)
        t0 = time.perf_counter()
        m.start()
        took = time.perf_counter() - t0
        m.stop()
        return took

    return run


def preloaders() -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"upsonic_server_manager._preload" in cmd and any(
            a.startswith(WARM_DIR.encode()) for a in cmd
        ):
            out.append(int(pid))
    return out


def kill_preloaders() -> None:
    for pid in preloaders():
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while preloaders() and time.monotonic() < deadline:
        time.sleep(0.01)


def first_warm() -> float:
    """A warm start that has to start the preloader first."""
    kill_preloaders()
    return managed(warm=True)()


def pss_kib(pid: int) -> int:
    """Proportional set size: shared pages count by the share."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def memory() -> list[tuple[str, int, int]]:
    rows = []
    servers = []
    for label, kw in (("cold server (ours)", {}), ("warm server", {"warm": True})):
        m = ServerManager(APP, "127.0.0.1", free_port(), f"mem{len(servers)}", **kw)
        m.start()
        servers.append((label, m))
    time.sleep(1)  # let both settle after their first requests
    for label, m in servers:
        pid = m.status().pid
        rows.append((label, pss_kib(pid), rss_kib(pid)))
    for pid in preloaders():
        rows.append(("the preloader (shared by all warm servers)", pss_kib(pid), rss_kib(pid)))
    for _, m in servers:
        m.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    contenders: dict[str, Callable[[], float]] = {
        "bare uvicorn (cold)": bare_uvicorn,
        "ours, cold": managed(),
        "ours, warm": managed(warm=True),
        "ours, warm, held socket (port 0)": managed(warm=True, hold_socket=True),
    }
    try:
        for fn in contenders.values():  # warm-up: page cache, the preloader
            fn()
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        names = list(contenders)
        for r in range(args.runs):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                samples[name].append(contenders[name]())
        firsts = [first_warm() for _ in range(5)]
        mem = memory()
    finally:
        kill_preloaders()
        shutil.rmtree(WARM_DIR, ignore_errors=True)

    cold = statistics.median(samples["bare uvicorn (cold)"])
    print(f"\n{args.runs} starts each, interleaved, {os.cpu_count()} CPUs\n")
    print("| start until ready | median | max | median / bare uvicorn |")
    print("|---|---:|---:|---:|")
    for name, xs in samples.items():
        med = statistics.median(xs)
        print(f"| {name} | {med * 1000:.0f} ms | {max(xs) * 1000:.0f} ms | {med / cold:.2f} |")
    med = statistics.median(firsts)
    print(
        f"| ours, warm, first start (starts the preloader; 5 runs) | {med * 1000:.0f} ms "
        f"| {max(firsts) * 1000:.0f} ms | {med / cold:.2f} |"
    )
    print("\n| memory of one hello server | PSS | RSS |")
    print("|---|---:|---:|")
    for label, pss, rss in mem:
        print(f"| {label} | {pss / 1024:.1f} MiB | {rss / 1024:.1f} MiB |")


if __name__ == "__main__":
    main()
