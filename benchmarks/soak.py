"""Soak and load: many start/stop cycles, concurrent readers while a writer
restarts the server, and a 16-server group. Prints one summary line and
exits non-zero if anything leaked, crashed, deadlocked or answered wrong.

    python benchmarks/soak.py                 # the full run: 500 cycles
    python benchmarks/soak.py --cycles 20 --load-seconds 4   # what CI runs
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
os.chdir(HERE)
sys.path.insert(0, str(HERE))
os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")

from upsonic_server_manager import ServerGroup, ServerManager  # noqa: E402

APP = "hello_app:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def zombies() -> int:
    me = str(os.getpid())
    n = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == me:
            n += 1
    return n


def serve_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
        return r.status == 200


def soak(cycles: int, pid_dir: str) -> dict:
    port = free_port()
    m = ServerManager(
        APP, "127.0.0.1", port, "soak", pid_dir=pid_dir, log_dir=os.path.join(pid_dir, "logs")
    )
    for _ in range(3):  # warm-up: first-use allocations, page cache
        m.start(redirect_output=True)
        m.stop()
    before = (fds(), threads(), rss_mib())
    failures = 0
    for i in range(cycles):
        m.start(redirect_output=(i % 2 == 0))
        if not serve_ok(port):
            failures += 1
        m.stop()
    after = (fds(), threads(), rss_mib())
    records = [n for n in os.listdir(pid_dir) if n.endswith((".pid", ".id"))]
    return {
        "cycles": cycles,
        "fds": after[0] - before[0],
        "threads": after[1] - before[1],
        "rss_mib": after[2] - before[2],
        "zombies": zombies(),
        "records": len(records),
        "failures": failures,
        "port_free": not m._is_port_in_use(),
    }


def load(seconds: float, readers: int, pid_dir: str) -> dict:
    port = free_port()
    shared = ServerManager(APP, "127.0.0.1", port, "load", pid_dir=pid_dir)
    # phase: (sequence number, running?) -- a reader's answer is checked only
    # when the phase did not change while it asked.
    phase = [0, False]
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []
    wrong: list[str] = []
    calls = [0]

    def writer() -> None:
        try:
            while not stop.is_set():
                shared.start()
                with lock:
                    phase[0] += 1
                    phase[1] = True
                time.sleep(0.05)
                with lock:
                    phase[0] += 1
                    phase[1] = False
                shared.stop()
        except Exception as e:  # noqa: BLE001
            errors.append(f"writer: {e!r}")

    def reader(k: int) -> None:
        try:
            while not stop.is_set():
                with lock:
                    seq, running = phase
                target = (
                    shared
                    if k % 2 == 0
                    else ServerManager(APP, "127.0.0.1", port, "load", pid_dir=pid_dir)
                )
                a = target.is_running()
                st = target.status()
                in_use = target._is_port_in_use()
                with lock:
                    stable = phase[0] == seq
                calls[0] += 3
                if st.state not in ("running", "starting", "dead", "stopped"):
                    wrong.append(f"state {st.state}")
                if stable and running and not (a and in_use and st.state == "running"):
                    wrong.append(f"running phase: is_running={a} in_use={in_use} {st.state}")
        except Exception as e:  # noqa: BLE001
            errors.append(f"reader {k}: {e!r}")

    ts = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(k,)) for k in range(readers)
    ]
    for t in ts:
        t.start()
    time.sleep(seconds)
    stop.set()
    deadlocked = False
    for t in ts:
        t.join(timeout=60)
        deadlocked |= t.is_alive()
    shared.stop()
    return {
        "readers": readers,
        "calls": calls[0],
        "errors": errors[:3],
        "n_errors": len(errors),
        "wrong": wrong[:3],
        "n_wrong": len(wrong),
        "deadlocked": deadlocked,
    }


def group(n: int, pid_dir: str) -> dict:
    ms = [
        ServerManager(APP, "127.0.0.1", free_port(), f"g{i}", pid_dir=pid_dir, start_timeout=120)
        for i in range(n)
    ]
    g = ServerGroup(ms)
    t0 = time.monotonic()
    g.start()
    took = time.monotonic() - t0
    serving = sum(serve_ok(m.port) for m in ms)
    g.stop()
    return {
        "servers": n,
        "serving": serving,
        "start_s": took,
        "all_free": not any(m._is_port_in_use() for m in ms),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=500)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--load-seconds", type=float, default=20.0)
    ap.add_argument("--group", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="usm-soak-") as d:
        s = soak(args.cycles, d)
        ld = load(args.load_seconds, args.readers, d)
        g = group(args.group, d)
    ok = (
        s["fds"] <= 0
        and s["threads"] <= 0
        and s["rss_mib"] < 8
        and s["zombies"] == 0
        and s["records"] == 0
        and s["failures"] == 0
        and s["port_free"]
        and ld["n_errors"] == 0
        and ld["n_wrong"] == 0
        and not ld["deadlocked"]
        and g["serving"] == g["servers"]
        and g["all_free"]
    )
    print(
        f"soak: {s['cycles']} cycles, fds {s['fds']:+d}, threads {s['threads']:+d}, "
        f"rss {s['rss_mib']:+.1f} MiB, zombies {s['zombies']}, records left {s['records']}, "
        f"failed requests {s['failures']}; load: {ld['readers']} readers + 1 restarter, "
        f"{ld['calls']} calls, {ld['n_errors']} errors, {ld['n_wrong']} wrong answers, "
        f"deadlock {'yes' if ld['deadlocked'] else 'no'}; group: {g['serving']}/{g['servers']} "
        f"serving after {g['start_s']:.1f} s, ports free {g['all_free']} -> "
        f"{'PASS' if ok else 'FAIL'}"
    )
    if not ok:
        print(f"details: {s} {ld} {g}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
