"""Supervision (issue 10), measured side by side in one run, medians quoted:

- crash (SIGKILL of the server) to serving again, against bare uvicorn's
  own start (``python -m uvicorn``, until it answers) in the same run;
- start() with ``supervise=True`` against a plain start, paired per round;
- a hung event loop to replaced (health check), against its bound
  ``health_interval x health_failures`` + one start;
- memory limit crossed to replaced;
- the supervisor's resident memory (RSS, PSS) and CPU while idle;
- chaos: rounds of random SIGKILLs to the server, a worker, the supervisor
  and the calling program; after each, exactly one generation must serve
  (or be restarting), with no orphan and no duplicate: the violations.

    python benchmarks/supervise.py                 # 20 crashes, 200 chaos rounds
    python benchmarks/supervise.py --quick         # 5 crashes, 30 rounds
    python benchmarks/supervise.py --only start,hung --hangs 8   # parts only

Needs the package installed, fastapi, httpx and uvicorn. Everything it
starts is stopped at the end, errors included; records live in a temporary
directory, never in $HOME.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "tests" / "apps"
APP = "usm_supervised:app"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pid_serving(port: int, timeout: float = 2.0) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=timeout).json()["pid"]
    except (httpx.HTTPError, OSError, ValueError):
        return None


def gone(p: psutil.Process) -> bool:
    """Ended: exited, reaped or a zombie (it may go between two looks)."""
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def until(cond, timeout: float, step: float = 0.002) -> float | None:
    """Seconds until cond() holds, or None at the timeout."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if cond():
            return time.perf_counter() - t0
        time.sleep(step)
    return None


def bare_uvicorn_start(port: int) -> float:
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", APP, "--port", str(port), "--log-level", "error"],
        stdin=subprocess.DEVNULL,
    )
    try:
        took = until(lambda: pid_serving(port, 0.5) is not None, 30)
        assert took is not None, "bare uvicorn did not start"
        return time.perf_counter() - t0
    finally:
        p.terminate()
        p.wait(10)


def start_cost(manager_cls, pid_dir: str, n: int) -> tuple[list[float], list[float]]:
    """start() until ready, (plain, ``supervise=True``), paired per round (the
    order alternating, so that neither always comes first), both on a held
    socket so that only the supervisor differs."""
    plain, supervised = [], []
    for i in range(n):
        pair = [(False, plain), (True, supervised)]
        for supervise, out in pair if i % 2 == 0 else pair[::-1]:
            m = manager_cls(
                APP,
                "127.0.0.1",
                0,
                f"bench-cost-{i}-{int(supervise)}",
                pid_dir=pid_dir,
                hold_socket=True,
                supervise=supervise,
            )
            t0 = time.perf_counter()
            m.start()
            out.append(time.perf_counter() - t0)
            m.stop()
    return plain, supervised


def paired_delta(plain: list[float], supervised: list[float]) -> float:
    """Median over the rounds of (supervised - plain), in seconds."""
    return statistics.median(s - p for s, p in zip(supervised, plain))


def crash_to_serving(manager_cls, pid_dir: str, n: int) -> tuple[list[float], list[float]]:
    """(ours: SIGKILL to answering again, bare: cold start to answering), interleaved."""
    ours, bare = [], []
    m = manager_cls(
        APP,
        "127.0.0.1",
        free_port(),
        "bench-crash",
        pid_dir=pid_dir,
        restart="always",
        restart_delay=0,
        stable_after=0,
        restart_limit=None,
    )
    m.start()
    try:
        for _ in range(n):
            bare.append(bare_uvicorn_start(free_port()))
            old = pid_serving(m.port)
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            took = until(lambda old=old: pid_serving(m.port) not in (None, old), 30)
            assert took is not None, "no restart"
            ours.append(time.perf_counter() - t0)
    finally:
        m.stop()
    return ours, bare


HUNG_INTERVAL = 0.5
HUNG_FAILURES = 2


def one_start(manager_cls, pid_dir: str, name: str) -> float:
    """A plain start() until ready, on a held socket: the bound's "one start"."""
    m = manager_cls(APP, "127.0.0.1", 0, name, pid_dir=pid_dir, hold_socket=True)
    t0 = time.perf_counter()
    m.start()
    took = time.perf_counter() - t0
    m.stop()
    return took


def hung_to_replaced(manager_cls, pid_dir: str, n: int) -> tuple[list[float], list[float]]:
    """(a hung event loop to a new generation answering, one plain start),
    interleaved: the bound is ``health_interval x health_failures`` + one start."""
    out, starts = [], []
    m = manager_cls(
        APP,
        "127.0.0.1",
        free_port(),
        "bench-hung",
        pid_dir=pid_dir,
        restart="always",
        restart_delay=0,
        health_check="/healthz",
        health_interval=HUNG_INTERVAL,
        health_timeout=HUNG_INTERVAL,
        health_failures=HUNG_FAILURES,
    )
    m.start()
    try:
        for i in range(n):
            starts.append(one_start(manager_cls, pid_dir, f"bench-one-{i}"))
            old = pid_serving(m.port)
            s = socket.create_connection(("127.0.0.1", m.port))
            s.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            t0 = time.perf_counter()
            took = until(lambda old=old: pid_serving(m.port, 0.3) not in (None, old), 30, 0.01)
            s.close()
            assert took is not None, "the hung server was not replaced"
            out.append(time.perf_counter() - t0)
            # The next round starts once the supervisor is done with this one.
            until(lambda old=old: not psutil.pid_exists(old), 30, 0.05)
    finally:
        m.stop()
    return out, starts


def memory_to_replaced(manager_cls, pid_dir: str, n: int) -> tuple[list[float], list[float]]:
    """(crossing to the old server gone, crossing to serving again)."""
    gone_at, serving_at = [], []
    m = manager_cls(
        APP,
        "127.0.0.1",
        free_port(),
        "bench-mem",
        pid_dir=pid_dir,
        restart="always",
        restart_delay=0,
        max_memory="150MiB",
    )
    m.start()
    try:
        for _ in range(n):
            old = pid_serving(m.port)
            proc = psutil.Process(old)
            limit = 150 * 1024 * 1024
            with httpx.Client(timeout=10) as c:
                try:
                    c.get(f"http://127.0.0.1:{m.port}/grow?mb=200")
                except httpx.HTTPError:
                    pass
            # The moment it crossed: its RSS is over the limit once /grow answered.
            t0 = time.perf_counter()
            try:
                over = proc.memory_info().rss > limit
            except psutil.Error:
                over = True
            assert over, "the server did not grow"
            g = until(lambda p=proc: not p.is_running() or p.status() == psutil.STATUS_ZOMBIE, 10)
            s = until(lambda old=old: pid_serving(m.port, 0.5) not in (None, old), 30)
            assert g is not None and s is not None
            gone_at.append(g)
            serving_at.append(time.perf_counter() - t0)
    finally:
        m.stop()
    return gone_at, serving_at


def supervisor_idle(manager_cls, pid_dir: str, seconds: float) -> tuple[float, float, float]:
    """(RSS MiB, PSS MiB, CPU % of one core) of an idle supervisor."""
    m = manager_cls(
        APP, "127.0.0.1", free_port(), "bench-idle", pid_dir=pid_dir, restart="on-failure"
    )
    m.start()
    try:
        sup = psutil.Process(m.status().supervisor_pid)
        c0 = sum(sup.cpu_times()[:2])
        time.sleep(seconds)
        cpu = 100 * (sum(sup.cpu_times()[:2]) - c0) / seconds
        full = sup.memory_full_info()
        return full.rss / 2**20, full.pss / 2**20, cpu
    finally:
        m.stop()


CALLER = textwrap.dedent(
    """
    import sys, time
    from upsonic_server_manager import ServerManager
    m = ServerManager(sys.argv[1], "127.0.0.1", int(sys.argv[2]), "chaos", pid_dir=sys.argv[3],
                      workers=2, restart="always", restart_delay=0.05, restart_limit=None)
    m.start()
    print("up", flush=True)
    time.sleep(3600)
    """
)


def chaos(pid_dir: str, rounds: int, seed: int) -> tuple[int, list[str], dict[str, int]]:
    """Random SIGKILLs; returns (violations, what they were, kills by victim)."""
    from upsonic_server_manager import ServerManager

    rng = random.Random(seed)
    port = free_port()
    token = f"{os.getpid()}-{seed}"
    env = dict(os.environ, PYTHONPATH=str(APPS), USM_CHAOS=token)

    def caller() -> subprocess.Popen:
        p = subprocess.Popen(
            [sys.executable, "-c", CALLER, APP, str(port), pid_dir],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "up"
        return p

    m = ServerManager(APP, "127.0.0.1", port, "chaos", pid_dir=pid_dir)
    violations: list[str] = []
    kills = {"server": 0, "worker": 0, "supervisor": 0, "caller": 0}
    proc = caller()
    try:
        for r in range(rounds):
            st = m.status()
            victim = rng.choice(list(kills))
            target = {
                "server": st.pid,
                "worker": rng.choice(st.workers) if st.workers else None,
                "supervisor": st.supervisor_pid,
                "caller": proc.pid,
            }[victim]
            if target is None:
                continue
            try:
                victim_proc = psutil.Process(target)
                os.kill(target, signal.SIGKILL)
            except (ProcessLookupError, psutil.NoSuchProcess):
                continue  # it ended between the look and the kill
            # A SIGKILL takes effect when the victim is next scheduled: judge
            # only once it is gone, not the moment before it dies.
            until(lambda v=victim_proc: gone(v), 10)
            if victim == "caller":
                proc.wait()
            kills[victim] += 1
            if victim in ("supervisor", "caller"):
                # A new program starts it again: it attaches to what runs.
                if victim == "supervisor":
                    proc.kill()
                    proc.wait()
                proc = caller()

            def settled() -> bool:
                s = m.status()
                return s.state == "running" and s.supervisor_pid is not None and len(s.workers) >= 2

            if until(settled, 30, 0.02) is None:
                violations.append(f"round {r} ({victim}): not serving again: {m.status()}")
                continue
            time.sleep(0.05)
            v = check_one_generation(m, token)
            if v:
                violations.append(f"round {r} ({victim}): {v}")
    finally:
        proc.kill()
        proc.wait()
        m.stop()
    return len(violations), violations, kills


def check_one_generation(m, token: str) -> str | None:
    """Exactly one supervisor and one generation (one process group, led by
    the recorded server) among the processes carrying this run's token:
    none orphaned, none duplicated."""
    st = m.status()
    groups: dict[int, list[int]] = {}
    sups = 0
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.environ().get("USM_CHAOS") != token:
                continue
            cmd = " ".join(p.info["cmdline"] or [])
            if "time.sleep(3600)" in cmd:
                continue  # the calling program
            if "_supervisor_main" in cmd:
                sups += 1
                continue
            if p.status() == psutil.STATUS_ZOMBIE:
                continue
            groups.setdefault(os.getpgid(p.info["pid"]), []).append(p.info["pid"])
        except (psutil.Error, ProcessLookupError):
            continue
    if sups != 1:
        return f"{sups} supervisors"
    if len(groups) != 1 or st.pid not in groups:
        return f"process groups {groups} (leader {st.pid})"
    return None


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} ms (max {max(xs) * 1000:.0f})"


PARTS = ("start", "crash", "hung", "memory", "idle", "chaos")


def main() -> int:
    import logging

    # The supervisors' words (restarts) would drown the table: kept quiet.
    logging.getLogger("upsonic_server_manager").addHandler(logging.NullHandler())
    logging.getLogger("upsonic_server_manager").propagate = False
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--crashes", type=int, default=None)
    ap.add_argument("--starts", type=int, default=15, help="paired start rounds (15)")
    ap.add_argument("--hangs", type=int, default=None, help="hung-loop rounds")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--idle", type=float, default=None)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to measure, of {','.join(PARTS)} (all)",
    )
    ap.add_argument("--chaos-only", action="store_true", help="only the chaos rounds")
    a = ap.parse_args()
    parts = {"chaos"} if a.chaos_only else set(a.only.split(","))
    if parts - set(PARTS):
        ap.error(f"unknown parts: {sorted(parts - set(PARTS))}")
    crashes = a.crashes or (5 if a.quick else 20)
    hangs = a.hangs or max(3, crashes // 4)
    rounds = a.rounds if a.rounds is not None else (30 if a.quick else 200)
    idle = a.idle or (10.0 if a.quick else 60.0)
    os.environ["PYTHONPATH"] = str(APPS)
    from upsonic_server_manager import ServerManager

    rows: list[str] = []
    bad: list[str] = []
    with tempfile.TemporaryDirectory(prefix="usm-supbench-") as pid_dir:
        os.chdir(pid_dir)
        if "start" in parts:
            plain, sup = start_cost(ServerManager, pid_dir, a.starts)
            rows.append(
                f"| start() `supervise=True` vs plain, paired ({a.starts} rounds) "
                f"| {ms(sup)} vs {ms(plain)}: median delta "
                f"{paired_delta(plain, sup) * 1000:+.0f} ms | ≤ +15 ms |"
            )
        if "crash" in parts:
            ours, bare = crash_to_serving(ServerManager, pid_dir, crashes)
            gap = (statistics.median(ours) - statistics.median(bare)) * 1000
            bare_row = f"| bare uvicorn start, until it answers ({crashes} runs) | {ms(bare)} | — |"
            rows.append(bare_row)
            rows.append(
                f"| SIGKILL to serving again ({crashes} runs) | {ms(ours)}, {gap:+.0f} ms vs bare "
                f"| ≤ bare start + 20 ms |"
            )
        if "hung" in parts:
            hung, start = hung_to_replaced(ServerManager, pid_dir, hangs)
            bound = HUNG_INTERVAL * HUNG_FAILURES + statistics.median(start)
            rows.append(
                f"| hung event loop to replaced ({HUNG_INTERVAL} s x {HUNG_FAILURES} checks, "
                f"{hangs} runs) | {ms(hung)} | ≤ bound {bound * 1000:.0f} ms "
                f"({HUNG_INTERVAL * HUNG_FAILURES:.1f} s + one start, {ms(start)}) |"
            )
        if "memory" in parts:
            gone, mem = memory_to_replaced(ServerManager, pid_dir, hangs)
            rows.append(f"| memory over max_memory to old server gone | {ms(gone)} | ≤ 1 s |")
            rows.append(f"| memory over max_memory to serving again | {ms(mem)} | — |")
        if "idle" in parts:
            rss, pss, cpu = supervisor_idle(ServerManager, pid_dir, idle)
            rows.append(
                f"| supervisor idle {idle:.0f} s: RSS / PSS | {rss:.1f} MiB / {pss:.1f} MiB "
                "| RSS ≤ 10 MiB |"
            )
            rows.append(f"| supervisor idle {idle:.0f} s: CPU | {cpu:.3f} % of a core | — |")
        if "chaos" in parts:
            n_bad, bad, kills = chaos(pid_dir, rounds, a.seed)
            rows.append(
                f"| chaos: {rounds} rounds of SIGKILL "
                f"({', '.join(f'{k} {v}' for k, v in kills.items())}) | {n_bad} violations | 0 |"
            )
    print(f"## Supervision ({platform_line()})\n")
    print("| measurement | result | goal |")
    print("|---|---|---|")
    print("\n".join(rows))
    for line in bad[:10]:
        print(f"  - {line}")
    return 0


def platform_line() -> str:
    import platform

    return f"{platform.python_version()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"


if __name__ == "__main__":
    sys.exit(main())
