"""The commands that change servers: start, stop, restart, reload, forget
and run (the foreground loop for systemd and containers)."""

from __future__ import annotations

import argparse
import time

from .. import ServerManager, ServerManagerError, StartError, _cli_warm, list_records
from .._cli_output import run_with_spinner
from .._restartable import why_not_restartable
from ._common import EXIT_OK, _known, _one_name_or_all, _recorded
from ._parser import _manager_from_args

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Optional, TextIO


def cmd_start(args: argparse.Namespace, out: TextIO) -> int:
    m = _manager_from_args(args)
    already = m.is_running()
    # The spinner only when the server's output goes to files: otherwise the
    # server writes to this terminal, and the two would run into each other.
    # The server outlives this command: its output goes to its log files
    # (`logs NAME`), never to this command's output, which a pipe or $(...)
    # may be reading until every writer is gone (docs/OWNER.md).
    took = run_with_spinner(f"starting {m.name}", lambda: m.start(True, args.force), out, spin=True)
    st = m.status()
    verb = "already running" if already else f"started in {took * 1000:.0f} ms"
    out.write(f"{m.name}: pid {st.pid} on {m.url} {verb}\n")
    return EXIT_OK


def _running_managers(args: argparse.Namespace) -> tuple[list[ServerManager], list[ServerManager]]:
    """(every recorded server with an app to go on, those of them running)."""
    found = (ServerManager.from_record(n, args.pid_dir) for n in list_records(args.pid_dir))
    managers = [m for m in found if m is not None]
    return managers, [m for m in managers if m.is_running()]


def _stop_all(args: argparse.Namespace, out: TextIO) -> list[ServerManager]:
    """Stops every recorded server concurrently; returns those that ran."""
    from .._group import ServerGroup

    managers, running = _running_managers(args)
    t0 = time.monotonic()
    # Concurrently: every SIGTERM goes out first, then one wait for all.
    ServerGroup(managers).stop()
    took = (time.monotonic() - t0) * 1000
    names = f" ({', '.join(m.name for m in running)})" if running else ""
    noun = "server" if len(running) == 1 else "servers"
    out.write(f"stopped {len(running)} running {noun}{names} in {took:.0f} ms\n")
    return running


def cmd_stop(args: argparse.Namespace, out: TextIO) -> int:
    _one_name_or_all(args)
    if args.all:
        _stop_all(args, out)
        _cli_warm.staying(out)  # not a server: say that it stays, and how to end it
        return EXIT_OK
    m = _recorded(args, args.name)
    if m is None or not m.is_running():
        if m is None:
            out.write(f"{args.name}: not running\n")
            return EXIT_OK
        # Dead, but workers of its killed master may still serve: the stop
        # ends them (and keeps how the run ended), and says so.
        orphans = m.status().workers
        m.stop()
        if orphans:
            n = len(orphans)
            noun = "worker" if n == 1 else "workers"
            out.write(
                f"{args.name}: its master had died; stopped {n} orphaned {noun} still running\n"
            )
        else:
            out.write(f"{args.name}: not running\n")
        return EXIT_OK
    t0 = time.monotonic()
    m.stop()
    out.write(f"{args.name}: stopped in {(time.monotonic() - t0) * 1000:.0f} ms\n")
    return EXIT_OK


def cmd_restart(args: argparse.Namespace, out: TextIO) -> int:
    _one_name_or_all(args)
    if args.all:
        return _restart_all(args, out)
    m = _recorded(args, args.name)
    if m is None:
        raise ServerManagerError(f"{args.name}: its record names no app to start again")
    if m.status().supervisor_pid is not None:
        # Its supervisor replaces the run on the socket it holds (a new
        # generation that fails leaves the old one serving).
        old = m.status().pid
        try:
            took = run_with_spinner(f"restarting {m.name}", m.restart, out, spin=m.redirect_output)
        except StartError as e:
            raise _not_replaced(m, "restarted", old, e) from None
        pid = m.status().pid
        out.write(f"{m.name}: restarted by its supervisor, pid {pid} in {took * 1000:.0f} ms\n")
        return EXIT_OK
    why = why_not_restartable(m)
    if why is not None:
        state = "left running" if m.is_running() else "not started"
        raise ServerManagerError(f"{m.name}: not restarted ({state}): {why}")
    # from_record restores how it was started, output mode included.
    m.stop()
    try:
        took = run_with_spinner(
            f"starting {m.name}", lambda: m.start(m.redirect_output), out, spin=m.redirect_output
        )
    except StartError as e:
        raise ServerManagerError(
            f"{m.name}: the server is now down (it was stopped for the restart, then failed "
            f"to start again; `restart {m.name}` tries again): {e}"
        ) from None
    out.write(f"{m.name}: restarted, pid {m.status().pid} in {took * 1000:.0f} ms\n")
    return EXIT_OK


def _not_replaced(m: ServerManager, done: str, old: Optional[int], e: StartError) -> Exception:
    """A new generation failed and was stopped: say that the old one still
    serves (when it does), and why the new one failed."""
    pid = m.status().pid
    if pid is not None and pid == old:
        state = f"the old generation (pid {pid}) still serves"
    elif pid is not None:
        state = f"pid {pid} serves"
    else:
        state = "the server is now down"
    return ServerManagerError(f"{m.name}: not {done}, {state}: the new generation failed: {e}")


def cmd_reload(args: argparse.Namespace, out: TextIO) -> int:
    m = _recorded(args, args.name)
    if m is None:
        raise ServerManagerError(f"{args.name}: its record names no app to reload")
    old = m.status().pid
    try:
        took = run_with_spinner(f"reloading {m.name}", m.reload, out, spin=m.redirect_output)
    except StartError as e:
        raise _not_replaced(m, "reloaded", old, e) from None
    out.write(f"{m.name}: reloaded, pid {old} -> {m.status().pid} in {took * 1000:.0f} ms\n")
    return EXIT_OK


def _restart_all(args: argparse.Namespace, out: TextIO) -> int:
    from .._group import ServerGroup

    # Every server is checked before any is stopped: one broken app must not
    # take the others down with it.
    _, running = _running_managers(args)
    problems = [f"{m.name}: {why}" for m in running if (why := why_not_restartable(m))]
    if problems:
        raise ServerManagerError("not restarted (all left running): " + "; ".join(problems))
    running = _stop_all(args, out)
    # Start again in parallel, each with its recorded output mode.
    t0 = time.monotonic()
    for redirect in (True, False):
        ServerGroup([m for m in running if m.redirect_output == redirect]).start(redirect)
    took = (time.monotonic() - t0) * 1000
    out.write(f"started {len(running)} servers again in {took:.0f} ms\n")
    return EXIT_OK


def cmd_forget(args: argparse.Namespace, out: TextIO) -> int:
    _one_name_or_all(args)
    if args.all:
        forgotten = []
        for n in _known(args):
            m = ServerManager.from_record(n, args.pid_dir)
            if m.forget() if m is not None else _forget_leftovers(args, n):
                forgotten.append(n)
        listed = f" ({', '.join(forgotten)})" if forgotten else ""
        out.write(f"forgot {len(forgotten)} servers that were not running{listed}\n")
        return EXIT_OK
    m = _recorded(args, args.name)
    if m is not None and not m.forget():
        raise ServerManagerError(f"{args.name}: is running; stop it first")
    if m is None and not _forget_leftovers(args, args.name):
        raise ServerManagerError(
            f"{args.name}: a process its files name still runs; stop it first "
            f"(upsonic-server stop {args.name})"
        )
    out.write(f"{args.name}: forgotten\n")
    return EXIT_OK


def _forget_leftovers(args: argparse.Namespace, name: str) -> bool:
    """Forgets a name no manager can be rebuilt for (its files name no app:
    e.g. only a killed supervisor's state is left). False while a process
    they name lives."""
    from .. import _core

    return _core.forget_leftovers(args.pid_dir, name)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from .._foreground import run_foreground, run_supervised

    # `run` owns its server in the foreground: however it ends (Ctrl-C,
    # SIGTERM, SIGKILL), the server ends with it, never left behind.
    m = _manager_from_args(args, stop_with_caller=True)
    if m._core.supervised:
        return run_supervised(m, args.redirect_output, args.force, out)
    return run_foreground(m, args.redirect_output, args.force, out)
