"""``upsonic-server warm``: the warm-start preloaders of this user (PID,
socket, servers forked, idle time, modules) and ``warm stop`` to end them.
Kept apart from cli.py so that the command is one import and one line there.
The queries are ``_core.preloaders`` and ``_core.stop_preloader`` (each
with a deadline: a hung preloader is reported, never waited for)."""

from __future__ import annotations

import argparse
import sys

from ._cli_output import fmt_duration
from ._core import Preloader, PreloaderStop, preloaders, stop_preloader

# Imported by every command's start-up (`upsonic-server status` is run by
# scripts): typing and json only when needed.
TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Callable, Optional, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
#: Seconds each preloader has to answer a status query.
STATUS_TIMEOUT = 2.0
#: Seconds each preloader has to answer a stop and exit.
STOP_TIMEOUT = 5.0


def add_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The ``warm`` command, added through cli.py's ``command(name, text)``."""
    p = command("warm", "show the warm-start preloaders; `warm stop` ends them")
    p.add_argument(
        "action", metavar="stop", nargs="?", choices=("stop",), help="end idle preloaders"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--dir",
        default=None,
        metavar="DIR",
        help="the preloaders' directory (default: the one warm starts use, $UPSONIC_WARM_DIR)",
    )
    p.add_argument("--pid", type=int, default=None, metavar="PID", help="stop: only this one")
    p.add_argument(
        "--force",
        action="store_true",
        help="stop: also one that serves live servers (they run on) or does not answer (killed)",
    )


def _as_dict(p: Preloader) -> dict[str, object]:
    return {
        "pid": p.pid,
        "socket": p.socket,
        "answering": p.answering,
        "error": p.error,
        "python": p.python,
        "live": p.live,
        "forked": p.forked,
        "idle_seconds": p.idle_seconds,
        "idle_limit": p.idle_limit,
        "modules": list(p.modules),
    }


def _table(found: list[Preloader], out: TextIO) -> None:
    if not found:
        out.write("no warm-start preloader is running\n")
        return
    rows = [("PID", "SERVERS", "IDLE", "EXITS IDLE AFTER", "SOCKET")]
    for p in found:
        pid = str(p.pid) if p.pid is not None else "?"
        if p.answering:
            servers = f"{p.live} live / {p.forked}"
            rows.append(
                (pid, servers, fmt_duration(p.idle_seconds), fmt_duration(p.idle_limit), p.socket)
            )
        else:
            rows.append((pid, "?", "?", "?", p.socket))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for i, row in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(row, widths)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
        if i == 0:
            continue
        p = found[i - 1]
        if p.answering:
            out.write(f"    python: {p.python}\n    modules: {', '.join(p.modules)}\n")
        else:
            out.write(f"    not answering: {p.error}\n")


def cmd_warm(args: argparse.Namespace, out: TextIO) -> int:
    found = preloaders(args.dir, STATUS_TIMEOUT)
    if args.action is None:
        if args.pid is not None or args.force:
            sys.stderr.write("upsonic-server: error: --pid and --force go with `warm stop`\n")
            return EXIT_USAGE
        if args.json:
            import json

            out.write(json.dumps([_as_dict(p) for p in found], indent=2) + "\n")
        else:
            _table(found, out)
        return EXIT_OK
    if args.pid is not None:
        found = [p for p in found if p.pid == args.pid]
        if not found:
            out.write(f"no warm-start preloader with PID {args.pid}\n")
            return EXIT_ERROR
    elif not found:
        out.write("no warm-start preloader is running\n")
        return EXIT_OK
    left = 0
    for p in found:
        done = stop_preloader(p, args.force, STOP_TIMEOUT)
        out.write(f"preloader {p.pid if p.pid is not None else '?'} ({p.socket}): {_said(done)}\n")
        left += done.outcome in ("busy", "no answer", "exiting")
    return EXIT_ERROR if left else EXIT_OK


def _said(done: PreloaderStop) -> str:
    outcome, n = done.outcome, done.servers
    noun = "server" if n == 1 else "servers"
    run = "runs" if n == 1 else "run"
    if outcome == "ended":
        return "stopped" + (f"; its {n} {noun} {run} on" if n else "")
    if outcome == "exiting":
        return "asked to stop; still exiting" + (f"; its {n} {noun} {run} on" if n else "")
    if outcome == "busy":
        they = "it runs" if n == 1 else "they run"
        return f"left running: it serves {n} live {noun} (--force ends it; {they} on)"
    if outcome == "killed":
        return "did not answer; killed (--force)"
    return f"left running: it did not answer ({done.reason}; --force kills it)"


def staying(out: TextIO, dir: Optional[str] = None) -> None:
    """After ``stop --all``: names each preloader that stays, and how to end
    it (it is not a server: it exits by itself when idle)."""
    try:
        found = preloaders(dir, STATUS_TIMEOUT)
    except ValueError:
        return
    for p in found:
        idle = f"; it exits after {fmt_duration(p.idle_limit)} idle" if p.answering else ""
        out.write(
            f"a warm-start preloader stays (PID {p.pid if p.pid is not None else '?'}{idle}); "
            "end it with `upsonic-server warm stop`\n"
        )
