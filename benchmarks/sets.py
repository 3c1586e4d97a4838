"""Server sets (issue 21): `up` of N servers in L dependency levels (each
server depends on every server of the level before) against starting the
same servers one by one in dependency order; and `up` with nothing changed,
in process (reading the file included) and as the CLI a user types (a new
Python process).

Goals: `up` within one start of the critical path (L single starts), and an
unchanged `up` of 20 servers under 150 ms. The two ways of starting take
turns going first; the table shows medians over the rounds.

    python benchmarks/sets.py [--servers 20] [--levels 5] [--rounds 3]

Needs the package installed (``maturin develop --release``) and uvicorn.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The same plain ASGI app as many.py (the manager is measured, not FastAPI).
from many import TINY_APP  # benchmarks/ is on the path when run as a script
from upsonic_server_manager import ServerGroup
from upsonic_server_manager._sets import load


def write_set(d: Path, servers: int, levels: int, base_port: int) -> Path:
    (d / "usm_sets_app.py").write_text(TINY_APP)
    per = max(1, servers // levels)
    names = [f"s{i:02d}" for i in range(servers)]
    text = []
    for i, name in enumerate(names):
        level = min(i // per, levels - 1)
        deps = [n for j, n in enumerate(names) if min(j // per, levels - 1) == level - 1]
        text.append(f'[servers.{name}]\napp_path = "usm_sets_app:app"\nport = {base_port + i}\n')
        if deps:
            text.append(f"depends_on = {deps!r}\n".replace("'", '"'))
    path = d / "upsonic-servers.toml"
    path.write_text("".join(text))
    return path


def free_base(n: int) -> int:
    import socket

    for base in range(21000, 60000, 500):
        ok = True
        for p in range(base, base + n):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise SystemExit("no free port range")


def one_by_one(path: Path, pid_dir: str) -> tuple[float, list[float]]:
    s = load(str(path), pid_dir=pid_dir)
    singles = []
    t0 = time.monotonic()
    for level in s.levels():
        for name in level:
            t = time.monotonic()
            s[name].start(True)
            singles.append(time.monotonic() - t)
    total = time.monotonic() - t0
    ServerGroup(list(s)).stop()
    return total, singles


def cli_env(d: Path) -> dict[str, str]:
    """The CLI as installed: bytecode cached (in a private prefix, not in
    the source tree), even where PYTHONDONTWRITEBYTECODE is set."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(d / "pycache")
    return env


def timed_cli(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    cmd = [sys.executable, "-m", "upsonic_server_manager", *args]
    t0 = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return time.monotonic() - t0, r


def up_then_unchanged(path: Path, pid_dir: str) -> tuple[float, float, float]:
    s = load(str(path), pid_dir=pid_dir)
    t0 = time.monotonic()
    results = s.up()
    took = time.monotonic() - t0
    failed = [r.line() for r in results if r.failed]
    if failed:
        s.down()
        raise SystemExit("up failed: " + "; ".join(failed))
    t0 = time.monotonic()
    again = load(str(path), pid_dir=pid_dir).up()
    in_process = time.monotonic() - t0
    assert all(r.action == "unchanged" for r in again), [r.line() for r in again]
    env = cli_env(path.parent)
    timed_cli(["-f", str(path), "config"], env)  # compiles and caches the bytecode
    by_cli, r = timed_cli(["--pid-dir", pid_dir, "-f", str(path), "up"], env)
    assert r.returncode == 0 and r.stdout.count("unchanged") == len(results), r.stdout + r.stderr
    s.down()
    return took, in_process, by_cli


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=20)
    ap.add_argument("--levels", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    ups, seqs, singles, unchanged, unchanged_cli, floor = [], [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="usm-sets-bench-") as tmp:
        d = Path(tmp)
        pid_dir = str(d / "pids")
        os.mkdir(pid_dir)
        path = write_set(d, args.servers, args.levels, free_base(args.servers))
        for i in range(args.rounds):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for which in order:
                if which == 0:
                    total, one = one_by_one(path, pid_dir)
                    seqs.append(total)
                    singles.extend(one)
                else:
                    took, warm, cli = up_then_unchanged(path, pid_dir)
                    ups.append(took)
                    unchanged.append(warm)
                    unchanged_cli.append(cli)
                    floor.append(timed_cli(["--version"], cli_env(d))[0])
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    med = statistics.median
    single = med(singles)
    critical = args.levels * single
    load1 = os.getloadavg()[0]
    print(
        f"\n{args.servers} servers in {args.levels} dependency levels (each server depends on "
        f"every server of the level before), {args.rounds} rounds, medians\n"
        f"{platform.platform()}, {os.cpu_count()} CPUs, load average {load1:.1f}\n"
    )
    rows = [
        ("one start (median of all single starts)", single, ""),
        (f"critical path ({args.levels} starts in a row)", critical, ""),
        ("up (dependency order, levels in parallel)", med(ups), f"<= {critical + single:.2f} s"),
        ("one by one, in dependency order", med(seqs), ""),
        ("up, nothing changed (in process, file read)", med(unchanged), "< 0.150 s"),
        ("up, nothing changed (CLI, new process)", med(unchanged_cli), "< 0.150 s"),
        ("  the floor: upsonic-server --version", med(floor), ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'':{width}}  {'seconds':>8}  goal")
    for name, value, goal in rows:
        print(f"{name:{width}}  {value:8.3f}  {goal}")
    print(
        f"\none by one / up: {med(seqs) / med(ups):.1f}x;  up / critical path: "
        f"{med(ups) / critical:.2f}"
    )


if __name__ == "__main__":
    main()
