"""Measures start/stop, is_running, port checks, holder lookup, import cost
and ServerGroup against upsonic 0.45.0, mirakuru and bare uvicorn.

Every number is a median over repeated runs measured side by side in one
process run; ratios, not absolute times, are what the targets speak of.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APP = "hello_app:app"
os.chdir(HERE)  # so `hello_app` is importable by every server
sys.path.insert(0, str(HERE))

from _original import load_original_module  # noqa: E402
from upsonic_server_manager import ServerGroup, ServerManager, port_holders  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_original():
    return load_original_module().ServerManager


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_free(port: int) -> None:
    deadline = time.monotonic() + 10
    while listening(port) and time.monotonic() < deadline:
        time.sleep(0.005)


UVICORN_ARGS = ["--log-level", "error", "--no-access-log"]


# ---- contenders for start/stop -----------------------------------------------------


def bare_uvicorn(port: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    p = subprocess.Popen(uvicorn_cmd(port), start_new_session=True)
    while not listening(port):
        time.sleep(0.0005)
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    os.killpg(p.pid, signal.SIGTERM)
    p.wait()
    t_stop = time.perf_counter() - t0
    return t_start, t_stop


def time_start_stop(start: Callable[[], object], stop: Callable[[], object]) -> tuple[float, float]:
    """Seconds spent in start() until it returns, then in stop()."""
    t0 = time.perf_counter()
    start()
    t1 = time.perf_counter()
    stop()
    return t1 - t0, time.perf_counter() - t1


def uvicorn_cmd(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        APP,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_ARGS,
    ]


def ours(port: int) -> tuple[float, float]:
    m = ServerManager(APP, "127.0.0.1", port, "bench")
    return time_start_stop(m.start, m.stop)


def original(port: int) -> tuple[float, float]:
    m = ORIGINAL(APP, "127.0.0.1", port, "bench_orig")
    return time_start_stop(m.start, m.stop)


def mirakuru(port: int) -> tuple[float, float]:
    from mirakuru import TCPExecutor

    ex = TCPExecutor(uvicorn_cmd(port), host="127.0.0.1", port=port, timeout=30)
    return time_start_stop(ex.start, ex.stop)


def median_us(fn: Callable[[], object], n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


# ---- idle processes ------------------------------------------------------------------


SPAWNER = """
import subprocess, sys
procs = [subprocess.Popen(["sleep", "3600"]) for _ in range(int(sys.argv[1]))]
print("ready", flush=True)
sys.stdin.read()
for p in procs:
    p.kill()
for p in procs:
    p.wait()
"""

HOLDER = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def spawn_idle(n: int) -> subprocess.Popen:
    """N idle processes on the machine, children of a helper (not of us)."""
    p = subprocess.Popen(
        [sys.executable, "-c", SPAWNER, str(n)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout and p.stdout.readline().strip() == "ready"
    return p


def kill_idle(p: subprocess.Popen) -> None:
    assert p.stdin
    p.stdin.close()
    p.wait()


# ---- import cost -----------------------------------------------------------------------

IMPORT_PROBE = """
import time, sys
def rss():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096
r0 = rss(); t0 = time.perf_counter()
import upsonic_server_manager
t1 = time.perf_counter(); r1 = rss()
print(t1 - t0, r1 - r0)
"""


def import_cost(n: int) -> tuple[float, float]:
    ts, rs = [], []
    for _ in range(n):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True
        ).stdout.split()
        ts.append(float(out[0]))
        rs.append(float(out[1]))
    return statistics.median(ts) * 1e3, statistics.median(rs) / 2**20


# ---- Ctrl-C during start() ----------------------------------------------------------------

CTRL_C = """
import signal, sys, time
# A benchmark started in the background by a shell inherits SIGINT ignored;
# Ctrl-C is what is measured here, so restore Python's handler.
signal.signal(signal.SIGINT, signal.default_int_handler)
from upsonic_server_manager import ServerManager
m = ServerManager("slow_app:app", "127.0.0.1", int(sys.argv[1]), "bench_ctrlc")
print("go", flush=True)
try:
    m.start()
except KeyboardInterrupt:
    print(time.monotonic(), flush=True)
"""


def ctrl_c_latency_ms() -> float:
    """SIGINT to KeyboardInterrupt, the half-started server already stopped."""
    p = subprocess.Popen(
        [sys.executable, "-c", CTRL_C, str(free_port())], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout and p.stdout.readline().strip() == "go"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
            if f.read().strip():
                break
        time.sleep(0.01)
    time.sleep(0.3)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    t1 = float(p.stdout.readline())
    p.wait()
    p.stdout.close()
    return (t1 - t0) * 1e3


# ---- main ------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=21, help="runs per start/stop contender")
    ap.add_argument("--idle", type=int, default=2000, help="extra idle processes")
    ap.add_argument("--quick", action="store_true", help="fewer runs, for CI smoke tests")
    ap.add_argument(
        "--print-only", action="store_true", help="print the tables; leave docs/benchmark.* alone"
    )
    args = ap.parse_args()
    runs = 3 if args.quick else max(5, args.runs)
    idle_n = 200 if args.quick else args.idle
    home = Path(os.environ.get("HOME", "/tmp"))
    results: dict[str, object] = {}

    # start/stop, interleaved so drift on a shared machine hits all alike
    contenders = {
        "bare uvicorn": bare_uvicorn,
        "ours": ours,
        "upsonic 0.45.0": original,
        "mirakuru TCPExecutor": mirakuru,
    }
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
    for fn in contenders.values():  # warm-up: bytecode caches, page cache
        port = free_port()
        fn(port)
        wait_free(port)
    names = list(contenders)
    for r in range(runs):
        # Rotate the order each round: whoever runs right after another
        # contender's shutdown pays for it, so nobody always goes second.
        for name in names[r % len(names) :] + names[: r % len(names)]:
            port = free_port()
            samples[name].append(contenders[name](port))
            wait_free(port)
    startstop = {
        name: (
            statistics.median(s[0] for s in v) * 1e3,
            statistics.median(s[1] for s in v) * 1e3,
        )
        for name, v in samples.items()
    }
    results["startstop_ms"] = startstop

    # is_running from a fresh instance, and _is_port_in_use
    port = free_port()
    srv = ServerManager(APP, "127.0.0.1", port, "bench_probe")
    srv.start()
    try:
        n = 300 if not args.quick else 50
        fresh_ours = [ServerManager(APP, "127.0.0.1", port, "bench_probe") for _ in range(n)]
        it = iter(fresh_ours)
        results["is_running_us"] = {"ours": median_us(lambda: next(it).is_running(), n)}
        # The original reads the same PID file: our record format is its format.
        fresh_orig = [ORIGINAL(APP, "127.0.0.1", port, "bench_probe") for _ in range(n)]
        it2 = iter(fresh_orig)
        results["is_running_us"]["upsonic 0.45.0"] = median_us(lambda: next(it2).is_running(), n)
        results["port_in_use_us"] = {
            "ours": median_us(srv._is_port_in_use, n),
            "upsonic 0.45.0": median_us(ORIGINAL(APP, "127.0.0.1", port, "x")._is_port_in_use, n),
        }
    finally:
        srv.stop()

    # Who holds the port, with 0 and N extra idle processes.
    # The holders are separate processes, as servers would be: one started
    # before the idle crowd, one after it.
    def start_holder() -> tuple[subprocess.Popen, int]:
        h = subprocess.Popen(
            [sys.executable, "-c", HOLDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert h.stdout
        return h, int(h.stdout.readline())

    def stop_holder(h: subprocess.Popen) -> None:
        assert h.stdin
        h.stdin.close()
        h.wait()

    holder, held = start_holder()
    free = free_port()
    lookups: dict[str, dict[str, float]] = {}
    orig_probe = ORIGINAL(APP, "127.0.0.1", free, "x")
    managed = ServerManager(APP, "127.0.0.1", free_port(), "bench_managed", workers=2)
    managed.start()
    for extra in (0, idle_n):
        procs = spawn_idle(extra) if extra else None
        late, late_port = start_holder()
        try:
            assert [h.pid for h in port_holders(held, "127.0.0.1")] == [holder.pid]
            assert [h.pid for h in port_holders(late_port, "127.0.0.1")] == [late.pid]
            total = len(os.listdir("/proc"))
            k = f"{extra} extra ({total} /proc entries)"
            reps = 30 if not args.quick else 5
            lookups[k] = {
                "ours, free port": median_us(lambda: port_holders(free, "127.0.0.1"), reps * 10),
                "ours, managed server's port": median_us(managed.port_holders, reps),
                "ours, held port": median_us(lambda: port_holders(held, "127.0.0.1"), reps),
                "ours, held port (newer holder)": median_us(
                    lambda lp=late_port: port_holders(lp, "127.0.0.1"), reps
                ),
                # The original's only lookup walks every process; on a free
                # port it finds nothing, so nothing is killed.
                "upsonic 0.45.0 (walk)": median_us(orig_probe._kill_process_using_port, reps),
            }
        finally:
            stop_holder(late)
            if procs is not None:
                kill_idle(procs)
    managed.stop()
    stop_holder(holder)
    results["holder_lookup_us"] = lookups

    # Import cost
    t_ms, mb = import_cost(7 if not args.quick else 3)
    results["import"] = {"ms": t_ms, "MiB": mb}

    # ServerGroup of four vs one by one
    def group_once(parallel: bool) -> float:
        ms = [ServerManager(APP, "127.0.0.1", free_port(), f"bench_g{i}") for i in range(4)]
        t0 = time.perf_counter()
        if parallel:
            ServerGroup(ms).start()
        else:
            for m in ms:
                m.start()
        took = time.perf_counter() - t0
        ServerGroup(ms).stop()
        return took

    g_seq, g_par = [], []
    for _ in range(3 if args.quick else 5):
        g_seq.append(group_once(False))
        g_par.append(group_once(True))
    results["group_ms"] = {
        "one by one": statistics.median(g_seq) * 1e3,
        "ServerGroup": statistics.median(g_par) * 1e3,
    }
    results["ctrl_c_ms"] = statistics.median(ctrl_c_latency_ms() for _ in range(5))
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    report(results, home, runs, write=not args.print_only)


def report(r: dict, home: Path, runs: int, write: bool = True) -> None:
    ss = r["startstop_ms"]
    bare_start, bare_stop = ss["bare uvicorn"]
    lines = [
        f"Machine: {r['machine']}. Medians; start/stop over {runs} interleaved runs, "
        "order rotated each round.",
        "",
        "| start/stop (FastAPI hello) | start() ms | stop() ms | start - bare | stop - bare |",
        "|---|---|---|---|---|",
    ]
    for name, (a, b) in ss.items():
        lines.append(
            f"| {name} | {a:.1f} | {b:.1f} | {a - bare_start:+.1f} | {b - bare_stop:+.1f} |"
        )
    ir, pu = r["is_running_us"], r["port_in_use_us"]
    lines += [
        "",
        "| probe | ours µs | upsonic 0.45.0 µs | ratio |",
        "|---|---|---|---|",
        f"| is_running(), fresh instance (PID record) | {ir['ours']:.1f} | "
        f"{ir['upsonic 0.45.0']:.1f} | {ir['ours'] / ir['upsonic 0.45.0']:.2f} |",
        f"| _is_port_in_use() | {pu['ours']:.1f} | {pu['upsonic 0.45.0']:.1f} | "
        f"{pu['ours'] / pu['upsonic 0.45.0']:.2f} |",
        "",
        "| who holds the port | ours, free port µs | ours, managed server (2 workers) µs "
        "| ours, unrelated holder older / newer than the crowd µs | upsonic 0.45.0 walk µs "
        "| original / ours (managed; unrelated, worse of the two) |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in r["holder_lookup_us"].items():
        o = v["upsonic 0.45.0 (walk)"]
        m, h1, h2 = (
            v["ours, managed server's port"],
            v["ours, held port"],
            v["ours, held port (newer holder)"],
        )
        lines.append(
            f"| {k} | {v['ours, free port']:.1f} | {m:.1f} | {h1:.0f} / {h2:.0f} | {o:.0f} | "
            f"{o / m:.0f}x; {o / max(h1, h2):.0f}x |"
        )
    g = r["group_ms"]
    lines += [
        "",
        f"| import upsonic_server_manager | {r['import']['ms']:.2f} ms | "
        f"{r['import']['MiB']:.2f} MiB resident |",
        "|---|---|---|",
        f"| 4 servers: one by one / ServerGroup | {g['one by one']:.0f} ms / "
        f"{g['ServerGroup']:.0f} ms | ratio {g['ServerGroup'] / g['one by one']:.2f} |",
        f"| Ctrl-C during start() to KeyboardInterrupt (server already stopped) | "
        f"{r['ctrl_c_ms']:.1f} ms | |",
    ]
    text = "\n".join(lines)
    print(text)
    if not write:
        return
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "benchmark.md").write_text(text + "\n")
    (docs / "benchmark.json").write_text(json.dumps(r, indent=2) + "\n")
    try:
        chart(r, docs / "benchmark.png")
    except ImportError:
        print("matplotlib missing: no chart written", file=sys.stderr)


def chart(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ss = r["startstop_ms"]
    names = list(ss)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].barh(names, [ss[n][0] for n in names], color="#4c72b0", label="start()")
    axes[0].barh(
        names,
        [ss[n][1] for n in names],
        left=[ss[n][0] for n in names],
        color="#dd8452",
        label="stop()",
    )
    axes[0].set_xlabel("ms (median)")
    axes[0].set_title("start() + stop(), FastAPI hello")
    axes[0].legend()
    lk = r["holder_lookup_us"]
    keys = list(lk)
    x = range(len(keys))
    w = 0.27
    series = [
        ("ours, managed server's port", "ours, managed server"),
        ("ours, held port", "ours, unrelated holder"),
        ("upsonic 0.45.0 (walk)", "upsonic 0.45.0"),
    ]
    for j, (key, label) in enumerate(series):
        axes[1].bar([i + (j - 1) * w for i in x], [lk[k][key] for k in keys], w, label=label)
    axes[1].set_yscale("log")
    axes[1].set_xticks(list(x), [k.split(" (")[0] for k in keys])
    axes[1].set_ylabel("µs (median, log)")
    axes[1].set_title("who holds the port")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


ORIGINAL = load_original()

if __name__ == "__main__":
    main()
