"""Many servers at once (issue #14): for N small plain-ASGI servers, group
start, group stop (concurrent and one by one), ``status()`` for all,
``upsonic-server status`` and the manager's memory, beside a single
server's stop and the floor: SIGTERM to every server at once with no
manager, waiting on pidfds.

Every N is measured in every round, side by side in one run; the table
shows medians. The three ways of stopping take turns going first.

    python benchmarks/many.py [--sizes 10,30,100] [--rounds 3] [--cli-runs 7]

Needs the package installed (``maturin develop --release``) and uvicorn.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
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

from upsonic_server_manager import ServerGroup, ServerManager

# A plain ASGI app: FastAPI would cost ~40 MiB per server, too much for 100
# on a small machine; what is measured here is the manager, not the app.
TINY_APP = """
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"hello"})
"""
APP = "usm_many_app:app"
STOPS = ("par", "seq", "floor")


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (all bound at once: a
    port handed out twice would make two servers collide)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def rss_mib() -> float:
    """Resident memory of this process (the manager), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cli_command() -> list[str]:
    script = Path(sys.executable).with_name("upsonic-server")
    if script.exists():
        return [str(script)]
    found = shutil.which("upsonic-server")
    return [found] if found else [sys.executable, "-m", "upsonic_server_manager"]


# The CLI runs as an installed program would: with cached bytecode. (An
# environment with PYTHONDONTWRITEBYTECODE=1 compiles cli.py and the package
# on every run, which adds ~20 ms that no user pays.)
CLI_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def run_cli(args: list[str]) -> tuple[float, float]:
    """Wall time (s) and peak RSS (MiB) of one run of a program."""
    t0 = time.perf_counter()
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=CLI_ENV)
    _, status, usage = os.wait4(p.pid, 0)
    took = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    err = p.stderr.read() if p.stderr else b""
    if p.stderr:
        p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError(f"{args} failed: {err.decode(errors='replace')}")
    return took, usage.ru_maxrss / 1024


def bare_stop(group: ServerGroup) -> float:
    """The floor: SIGTERM to every server at once, then wait for all of them
    on pidfds; no manager involved. Returns the seconds it took."""
    fds = [os.pidfd_open(m._read_pid() or 0) for m in group]
    try:
        t0 = time.perf_counter()
        for fd in fds:
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        left = set(fds)
        while left:
            ready, _, _ = select.select(list(left), [], [], 10)
            left -= set(ready)
        return time.perf_counter() - t0
    finally:
        for fd in fds:
            os.close(fd)
        group.stop()  # reaps and clears the records (not timed)


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:.0f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,30,100", help="comma-separated N (default 10,30,100)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per N (default 3)")
    ap.add_argument("--cli-runs", type=int, default=7, help="`status` runs per round (default 7)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    tmp = Path(tempfile.mkdtemp(prefix="usm-many-"))
    (tmp / "usm_many_app.py").write_text(TINY_APP)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp), os.environ.get("PYTHONPATH")) if p
    )
    os.chdir(tmp)
    cli = cli_command()
    rss_base = rss_mib()

    for d in ["single", "empty", *(f"n{n}" for n in sizes)]:
        (tmp / d).mkdir()
    groups = {
        n: ServerGroup(
            [
                ServerManager(APP, "127.0.0.1", port, f"s{i}", pid_dir=tmp / f"n{n}")
                for i, port in enumerate(free_ports(n))
            ]
        )
        for n in sizes
    }
    single = ServerManager(APP, "127.0.0.1", free_ports(1)[0], "single", pid_dir=tmp / "single")
    keys = ("start", *STOPS, "status", "cli", "cli_rss", "rss")
    res: dict[int, dict[str, list[float]]] = {n: {k: [] for k in keys} for n in sizes}
    single_stop: list[float] = []
    cli_empty: list[float] = []
    python_bare: list[float] = []
    run_cli([*cli, "--pid-dir", str(tmp / "empty"), "status"])  # writes the bytecode cache
    try:
        for r in range(args.rounds):
            for _ in range(3):
                single.start()
                single_stop.append(timed(single.stop))
            for _ in range(args.cli_runs):
                cli_empty.append(run_cli([*cli, "--pid-dir", str(tmp / "empty"), "status"])[0])
                python_bare.append(run_cli([sys.executable, "-c", "pass"])[0])
            for n in sizes:
                g, d = groups[n], res[n]
                turn = STOPS[r % 3 :] + STOPS[: r % 3]
                for how in turn:
                    d["start"].append(timed(g.start))
                    if how == turn[0]:
                        d["status"].append(median([timed(g.status) for _ in range(3)]))
                        d["rss"].append(rss_mib())
                        for _ in range(args.cli_runs):
                            took, peak = run_cli([*cli, "--pid-dir", str(tmp / f"n{n}"), "status"])
                            d["cli"].append(took)
                            d["cli_rss"].append(peak)
                    if how == "floor":
                        d[how].append(bare_stop(g))
                    else:
                        order = "parallel" if how == "par" else "reverse"
                        d[how].append(timed(lambda: g.stop(order=order)))  # noqa: B023
                print(f"round {r + 1}/{args.rounds}: N={n} done", file=sys.stderr, flush=True)
    finally:
        for g in groups.values():
            g.stop()
        single.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    one = median(single_stop)
    load = os.getloadavg()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average at the end "
        f"{load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}. Medians of {args.rounds} rounds "
        f"({args.cli_runs} `status` runs each). Single server stop: {ms(one)}. "
        f"Manager RSS before any server: {rss_base:.1f} MiB.\n"
    )
    print(
        "| N | group start | stop, concurrent | stop, one by one | floor: SIGTERM all, "
        "no manager | concurrent / single stop | `status()` for all "
        "| `upsonic-server status` | manager RSS | CLI peak RSS |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        d = res[n]
        print(
            f"| {n} | {ms(median(d['start']))} | {ms(median(d['par']))} | "
            f"{ms(median(d['seq']))} | {ms(median(d['floor']))} | "
            f"{median(d['par']) / one:.1f}x | {ms(median(d['status']))} | "
            f"{ms(median(d['cli']))} | {median(d['rss']):.1f} MiB | "
            f"{median(d['cli_rss']):.1f} MiB |"
        )
    print(
        f"\n`upsonic-server status` with no servers: {ms(median(cli_empty))}; "
        f"`python -c pass`: {ms(median(python_bare))}."
    )
    big = max(sizes)
    ratio = median(res[big]["par"]) / one
    cli_big = median(res[big]["cli"])
    print(
        f"Goals: group stop of {big} servers / single stop = {ratio:.1f} (goal <= 2): "
        f"{'met' if ratio <= 2 else 'NOT met'}; `upsonic-server status` with {big} servers "
        f"= {ms(cli_big)} (goal < 150 ms): {'met' if cli_big < 0.150 else 'NOT met'}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
