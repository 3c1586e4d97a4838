"""The supervisor writing the logs (issue 20), side by side in one run,
medians quoted:

- a server printing 200k lines on stdout (about 10 MB): the time until
  the last line is in the log file, with the supervisor writing it (a
  supervised server: its output goes through the supervisor's pipe) vs
  the server writing its file directly (a plain ``start(redirect_output=True)``);
  the goal is at most 1.3x;
- the supervisor's CPU (user + system) per MB written;
- an idle supervisor's RSS and PSS (``/proc/PID/smaps_rollup``).

    python benchmarks/logs.py             # 5 rounds
    python benchmarks/logs.py --rounds 2

Needs the package installed, fastapi, httpx and uvicorn. Everything it
starts is stopped at the end, errors included; records and logs live in a
temporary directory, never in $HOME.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
APPS = HERE.parent / "tests" / "apps"
LINES = 200_000


def smaps_rollup(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                rss = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
    return rss, pss


def last_line_in(path: str, needle: bytes, timeout: float = 120) -> bool:
    """Waits until the file ends with the line holding ``needle``."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with open(path, "rb") as f:
                f.seek(max(0, os.path.getsize(path) - 200))
                if needle in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.002)
    return False


def one(manager, start: int, supervised: bool) -> tuple[float, float, int]:
    """Seconds until 200k lines are in the log; the supervisor's CPU
    seconds meanwhile; bytes written."""
    out_log = manager.log_files[0]
    before = os.path.getsize(out_log) if os.path.exists(out_log) else 0
    sup = psutil.Process(manager.status().supervisor_pid) if supervised else None
    cpu0 = sum(sup.cpu_times()[:2]) if sup else 0.0
    t0 = time.perf_counter()
    r = httpx.get(
        f"http://127.0.0.1:{manager.port}/print",
        params={"start": start, "n": LINES, "streams": "out"},
        timeout=300,
    )
    r.raise_for_status()
    assert last_line_in(out_log, f"out {start + LINES - 1:07d} ".encode())
    took = time.perf_counter() - t0
    cpu = sum(sup.cpu_times()[:2]) - cpu0 if sup else 0.0
    # With rotation at the default 50 MiB the size may drop: count lines' bytes instead.
    written = os.path.getsize(out_log) - before
    return took, cpu, written if written > 0 else LINES * 53


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sys.path.insert(0, str(APPS))
    tmp = tempfile.mkdtemp(prefix="usm-bench-logs-")
    os.environ["HOME"] = tmp
    os.environ["PYTHONPATH"] = str(APPS)
    os.chdir(tmp)
    from upsonic_server_manager import ServerManager

    sup_m = ServerManager("usm_printer:app", "127.0.0.1", 0, "bench-sup", restart="always")
    plain = ServerManager("usm_printer:app", "127.0.0.1", 0, "bench-plain")
    ratios, sup_times, plain_times, cpu_per_mb = [], [], [], []
    try:
        sup_m.start()
        plain.start(redirect_output=True)
        time.sleep(1.0)
        sup_pid = sup_m.status().supervisor_pid
        idle_rss, idle_pss = smaps_rollup(sup_pid)
        start = 0
        for i in range(args.rounds):
            a, cpu, written = one(sup_m, start, True)
            b, _, _ = one(plain, start, False)
            start += LINES
            sup_times.append(a)
            plain_times.append(b)
            ratios.append(a / b)
            cpu_per_mb.append(cpu / (written / 1e6))
            print(
                f"round {i + 1}: supervisor {a:.3f} s, direct {b:.3f} s, "
                f"ratio {a / b:.2f}, supervisor CPU {cpu * 1000:.0f} ms for {written / 1e6:.1f} MB",
                flush=True,
            )
    finally:
        for m in (sup_m, plain):
            try:
                m.stop()
            except Exception as e:  # noqa: BLE001
                print(f"stopping {m.name}: {e}", file=sys.stderr)
    med = statistics.median
    rows = [
        ("200k lines, supervisor writes (s)", f"{med(sup_times):.3f}"),
        ("200k lines, server writes its file (s)", f"{med(plain_times):.3f}"),
        ("ratio (goal <= 1.3)", f"{med(ratios):.2f}"),
        ("supervisor CPU per MB written (ms)", f"{med(cpu_per_mb) * 1000:.1f}"),
        ("idle supervisor RSS (MiB)", f"{idle_rss / 2**20:.1f}"),
        ("idle supervisor PSS (MiB)", f"{idle_pss / 2**20:.1f}"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"\n{'measure (median of ' + str(args.rounds) + ' rounds)':<{width}}  value")
    for k, v in rows:
        print(f"{k:<{width}}  {v}")


if __name__ == "__main__":
    main()
