"""What the drop-in's compatibility costs: the library class against a
subclass that overrides every helper the original lets programs override
(each calling the library's own), for is_running() and a start()/stop()
cycle of a real server; and an attribute assignment. Medians, interleaved.

    python benchmarks/dropin.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from upsonic_server_manager import ServerManager


class AllHooks(ServerManager):
    def _write_pid(self) -> None:
        super()._write_pid()

    def _read_pid(self):
        return super()._read_pid()

    def _cleanup_pid(self) -> None:
        super()._cleanup_pid()

    def _is_port_in_use(self, kill_if_used: bool = False) -> bool:
        return super()._is_port_in_use(kill_if_used)

    def _force_cleanup_port(self) -> None:
        super()._force_cleanup_port()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def per_call(f, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    a = ap.parse_args()
    os.environ["PYTHONPATH"] = str(Path(__file__).parent)
    home = tempfile.mkdtemp(prefix="usm-dropin-")
    os.environ["HOME"] = home
    rows: dict[str, list[float]] = {}

    def note(key: str, v: float) -> None:
        rows.setdefault(key, []).append(v)

    for _ in range(a.rounds):
        for cls in (ServerManager, AllHooks):
            m = cls("hello_app:app", "127.0.0.1", free_port(), f"b{cls.__name__}", pid_dir=home)
            note(f"is_running() stopped | {cls.__name__}", per_call(m.is_running, 200))
            t = time.perf_counter()
            m.start()
            note(f"start() | {cls.__name__}", time.perf_counter() - t)
            note(f"is_running() running | {cls.__name__}", per_call(m.is_running, 200))
            t = time.perf_counter()
            m.stop()
            note(f"stop() | {cls.__name__}", time.perf_counter() - t)
            ports = iter(range(20000, 20200))
            note(
                f"m.port = N (stopped) | {cls.__name__}",
                per_call(lambda m=m, ports=ports: setattr(m, "port", next(ports)), 100),
            )
    print(f"{'measure':28} {'ServerManager':>14} {'all 5 hooks':>14} {'ratio':>7}")
    for what in dict.fromkeys(k.split(" | ")[0] for k in rows):
        base = statistics.median(rows[f"{what} | ServerManager"])
        hooked = statistics.median(rows[f"{what} | AllHooks"])
        unit, scale = ("ms", 1e3) if base > 1e-3 else ("us", 1e6)
        print(
            f"{what:28} {base * scale:11.1f} {unit} {hooked * scale:11.1f} {unit} "
            f"{hooked / base:6.2f}x"
        )
    print(f"({a.rounds} rounds, interleaved; Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
