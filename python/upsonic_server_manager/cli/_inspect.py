"""The commands that look at servers: status, logs and diagnose."""

from __future__ import annotations

import argparse
import sys
import time

from .. import ServerManager, ServerManagerError, ServerStatus, log_files
from .._cli_output import columns, follow, print_history, render_table, status_row
from ._common import (
    EXIT_NOT_RUNNING,
    EXIT_OK,
    EXIT_UNKNOWN,
    UnknownName,
    _known,
    _pid_dir_text,
    _recorded,
)

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Optional, TextIO


#: How long `status` on a terminal samples CPU use.
CPU_WINDOW = 0.2


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    known = _known(args)
    if args.name and args.name not in known:
        print(
            f"upsonic-server: {UnknownName(args.name, known, _pid_dir_text(args))}", file=sys.stderr
        )
        return EXIT_UNKNOWN
    names = [args.name] if args.name else known
    managers: list[tuple[str, Optional[ServerManager]]] = [
        (n, ServerManager.from_record(n, args.pid_dir)) for n in names
    ]
    # On a terminal, CPU over a short recent window; for scripts, no wait
    # and the lifetime average (the header says which).
    window = CPU_WINDOW if (out.isatty() and not args.json) else None
    t0 = time.monotonic()
    before = {n: m.cpu_time() for n, m in managers if m is not None and window}
    statuses = [
        m.status()
        if m is not None
        else ServerStatus(n, None, "-", 0, "stopped", None, None, None, None)
        for n, m in managers
    ]
    cpu: dict[str, Optional[float]] = {s.name: s.cpu_percent for s in statuses}
    if window:
        time.sleep(max(0.0, window - (time.monotonic() - t0)))
        elapsed = time.monotonic() - t0
        for n, m in managers:
            a, b = before.get(n), m.cpu_time() if m is not None else None
            cpu[n] = None if a is None or b is None else 100.0 * (b - a) / elapsed
    if args.json:
        import json

        out.write(json.dumps([s.as_dict() for s in statuses], indent=2) + "\n")
    elif statuses:
        rows = [status_row(s, cpu[s.name]) for s in statuses]
        out.write(render_table(rows, columns(window)) + "\n")
    else:
        out.write(f"no servers recorded in {_pid_dir_text(args)}\n")
    if args.name:
        return EXIT_OK if statuses[0].state in ("running", "starting") else EXIT_NOT_RUNNING
    return EXIT_OK


def cmd_logs(args: argparse.Namespace, out: TextIO) -> int:
    known = _known(args)
    if args.name and args.name not in known:
        raise UnknownName(args.name, known, _pid_dir_text(args))
    names = [args.name] if args.name else known
    logs = []
    for name in names:
        m = ServerManager.from_record(name, args.pid_dir)
        logs.append((name, m.log_files if m is not None else log_files(name)))
    sources = print_history(logs, args, out)
    if not sources:
        where = names[0] if len(names) == 1 else "any server"
        raise ServerManagerError(
            f"no log files for {where} (start it with --redirect-output to keep its output)"
        )
    if args.follow:
        follow(sources, out)
    return EXIT_OK


def cmd_diagnose(args: argparse.Namespace, out: TextIO) -> int:
    m = _recorded(args, args.name)
    if m is None:
        raise ServerManagerError(f"{args.name}: its record names no app to diagnose")
    import json

    out.write(json.dumps(m.diagnose(), indent=2, default=str) + "\n")
    return EXIT_OK
