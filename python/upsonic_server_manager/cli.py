"""``upsonic-server``: start, stop and inspect servers from the shell, run one
in the foreground under systemd or in a container, or try the bundled demo.
One function per command; the library's public API only."""

from __future__ import annotations

# Only what every command needs is imported here: `upsonic-server status`
# is run by scripts and should start quickly. The rest is imported by the
# command that uses it.
import argparse
import os
import signal
import sys
import time

from . import (
    PortInUseError,
    ServerManager,
    ServerManagerError,
    ServerStatus,
    StartError,
    _cli_sets,
    _cli_warm,
    _core,
    list_records,
    log_files,
)
from ._cli_output import (
    columns,
    fmt_address,
    follow,
    for_the_shell,
    print_history,
    render_table,
    run_with_spinner,
    status_row,
)

TYPE_CHECKING = False

if TYPE_CHECKING:
    from typing import Any, Callable, Optional, Sequence, TextIO

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # LSB status: "program is not running"
EXIT_UNKNOWN = 4  # LSB status: "program or service status is unknown"
EXIT_INTERRUPTED = 130

#: How long `status` on a terminal samples CPU use.
CPU_WINDOW = 0.2


class UsageError(Exception):
    """Bad command-line input: exit 2 with the usage line and the problem."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message)
        self.usage = usage


class UnknownName(Exception):
    """A NAME that no record knows: the known names, and a non-zero exit."""

    def __init__(self, name: str, known: Sequence[str], where: str) -> None:
        listed = f"known: {', '.join(known)}" if known else f"no servers recorded in {where}"
        super().__init__(f"no server named {name!r} ({listed})")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows an option's default, unless it has none or the text says it."""

    def _get_help_string(self, action: argparse.Action) -> Optional[str]:
        text = action.help or ""
        if action.default is None or action.default is False or "(default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message, self.format_usage().strip())


# ---- arguments --------------------------------------------------------------------------


def _env_pair(text: str) -> tuple[str, str]:
    if "=" not in text or text.startswith("="):
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k, v


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return v


def _add_server_args(p: argparse.ArgumentParser, log_dir: Optional[str] = "logs") -> None:
    """APP, then every option of the spec that has a flag (``_core.OPTIONS``:
    its flag, default, help, metavar and group), read as ``_CLI`` says:
    `start`, `run` and `systemd-unit` accept the same options."""
    p.add_argument("app", metavar="APP", help="the ASGI app as module:attribute, e.g. myapi:app")
    groups: dict[str, Any] = {}
    for o in _core.OPTIONS:
        if o["flag"] is None:
            continue
        how = dict(_CLI.get(o["name"], {}))
        if o["name"] == "log_dir":
            how["default"] = log_dir
        title = o["group"]
        where = groups.setdefault(title, p.add_argument_group(title) if title else p)
        if o["metavar"] and "action" not in how or how.get("action") == "append":
            how.setdefault("metavar", o["metavar"])
        how.setdefault("default", o["default"])
        how.setdefault("help", o["help"])
        where.add_argument(o["flag"], dest=o["name"], **how)


def _seconds_or_zero(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else _positive(text)


def _limit(text: str) -> Optional[int]:
    if text.lower() in ("none", "never", "0"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'none', got {text!r}") from None


def _bytes(text: str) -> object:
    """A size: bytes as an int, else the text ("512MiB") for the core."""
    return int(text) if text.isdigit() else text


_DEFAULT_LOG_DIR: str = next(o["default"] for o in _core.OPTIONS if o["name"] == "log_dir")

# How the command line reads the spec's options (the CLI table): a type,
# an action or a default of its own where a shell word differs from a
# Python value; the names, flags, help and other defaults are the spec's.
_CLI: dict[str, dict[str, Any]] = {
    "host": {"default": "127.0.0.1"},
    "port": {"type": int, "required": True},
    "name": {
        "default": None,
        "help": "server name, used for its PID record and log files (default: APP's module)",
    },
    "workers": {"type": int},
    "env": {"type": _env_pair, "action": "append", "default": []},
    "start_timeout": {"type": _positive},
    "stop_timeout": {"type": _positive},
    "hold_socket": {"action": "store_true", "default": None},
    "restart": {"choices": ("no", "on-failure", "always")},
    "restart_delay": {"type": _seconds_or_zero},
    "restart_max_delay": {"type": _positive},
    "restart_limit": {"type": _limit},
    "stable_after": {"type": _seconds_or_zero},
    "health_interval": {"type": _positive},
    "health_timeout": {"type": _positive},
    "health_failures": {"type": int},
    "max_memory": {"type": _bytes},
    # The CLI supervises by default (issue 20): a server that outlives the
    # command has a parent that knows how it ended. The library's default
    # stays the original's (no supervisor).
    "supervise": {
        "action": argparse.BooleanOptionalAction,
        "default": True,
        "help": "run the per-server supervisor even without --restart: it records how each "
        "run ended and writes the logs (default: on; --no-supervise: the server alone, as "
        "the original starts it)",
    },
    "log_max_bytes": {"type": _bytes},
    "log_backup_count": {"type": int},
    "log_timestamps": {"action": "store_true"},
    "warm": {"action": "store_true"},
    "preload": {"action": "append", "default": []},
}


def _add_start_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="stop programs of yours that hold the port")
    p.add_argument(
        "--redirect-output",
        action="store_true",
        help="write its output to log files instead of this terminal",
    )


def build_parser() -> argparse.ArgumentParser:
    fmt = _Help
    parser = _Parser(
        prog="upsonic-server",
        description="Start, stop and inspect uvicorn servers managed by upsonic-server-manager.",
        formatter_class=fmt,
    )
    from . import __version__

    parser.add_argument(
        "--pid-dir", default=None, help="where PID records live (default: your home directory)"
    )
    parser.add_argument("--version", action="version", version=f"upsonic-server {__version__}")
    parser.add_argument("-f", "--file", default=None, metavar="FILE", help=_cli_sets.FILE_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=fmt)
        # Also accepted after the command; SUPPRESS keeps the one given before.
        p.add_argument("--pid-dir", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    p = command("start", "start a server and return once it is ready")
    _add_server_args(p)
    _add_start_args(p)

    p = command("stop", "stop a server (or every recorded one, concurrently)")
    p.add_argument("name", metavar="NAME", nargs="?", help="the server's name")
    _cli_sets.add_file_option(p)
    p.add_argument("--all", action="store_true", help="every recorded server, concurrently")

    p = command("restart", "stop a server and start it again as it was started")
    p.add_argument("name", metavar="NAME", nargs="?", help="the server's name")
    p.add_argument("--all", action="store_true", help="every running recorded server")

    p = command("reload", "a new generation on the held socket, then the old one stops")
    p.add_argument("name", metavar="NAME", help="the server's name")

    p = command("status", "show servers as a table (exit 3 if NAME is not running)")
    p.add_argument("name", metavar="NAME", nargs="?", help="only this server")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _cli_sets.add_file_option(p)

    p = command("logs", "print servers' output, stdout and stderr, each line marked")
    p.add_argument("name", metavar="NAME", nargs="?", help="only this server (default: all)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stdout", action="store_true", help="only the standard output")
    which.add_argument("--stderr", action="store_true", help="only the standard error")
    p.add_argument(
        "-n",
        "--lines",
        type=int,
        default=20,
        metavar="LINES",
        help="lines of history per stream, spanning its rotated files",
    )
    _cli_sets.add_file_option(p, short=False)  # -f is --follow here

    p = command("diagnose", "print the diagnosis of a server as JSON")
    p.add_argument("name", metavar="NAME", help="the server's name")

    p = command("forget", "forget a stopped server (it leaves the status table)")
    p.add_argument("name", metavar="NAME", nargs="?", help="the server's name")
    p.add_argument("--all", action="store_true", help="every server that is not running")

    p = command("run", "run a server in the foreground (systemd, containers); SIGHUP reloads it")
    _add_server_args(p)
    _add_start_args(p)

    p = command("systemd-unit", "print a systemd unit that uses `run`")
    _add_server_args(p, log_dir=None)
    _add_start_args(p)
    p.add_argument("--user", default=None, help="the User= of the unit (default: you)")

    command("demo", "start the bundled demo app, request it, show status, stop it")
    _cli_sets.add_commands(command)  # up, down, config, export (docs/SETS.md)
    _cli_warm.add_command(command)  # warm, warm stop (docs/WARM.md)
    return parser


def _name_of(args: argparse.Namespace) -> str:
    """--name, else the module part of APP (`myapi.main:app` -> `myapi.main`)."""
    return args.name or args.app.split(":", 1)[0]


def _manager_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """ServerManager's keywords as the options of start, run and
    systemd-unit give them (uvicorn's own arguments come after ``--``):
    every option of the spec with a flag but the positional ones."""
    kw: dict[str, Any] = {
        o["name"]: getattr(args, o["name"])
        for o in _core.OPTIONS
        if o["flag"] is not None and not o["positional"]
    }
    kw["log_dir"] = args.log_dir or _DEFAULT_LOG_DIR
    kw["env"] = dict(args.env)
    kw["pid_dir"] = args.pid_dir
    if getattr(args, "uvicorn_args", None) is not None:
        kw["uvicorn_args"] = args.uvicorn_args
    return kw


def _manager_from_args(args: argparse.Namespace) -> ServerManager:
    """The manager the arguments describe; a rejected value is a usage error."""
    try:
        return ServerManager(
            args.app,
            args.host,
            args.port,
            _name_of(args),
            **_manager_kwargs(args),
            # An operator's server keeps how each run ended (status lists it).
            history=True,
        )
    except ValueError as e:
        raise UsageError(str(e)) from None


def _pid_dir_text(args: argparse.Namespace) -> str:
    return args.pid_dir or os.path.expanduser("~")


def _known(args: argparse.Namespace) -> list[str]:
    """Every name recorded, running or kept after a stop."""
    return list_records(args.pid_dir, stopped=True)


def _recorded(args: argparse.Namespace, name: str) -> Optional[ServerManager]:
    """The manager recorded as ``name``; UnknownName if no record knows it."""
    known = _known(args)
    if name not in known:
        raise UnknownName(name, known, _pid_dir_text(args))
    try:
        return ServerManager.from_record(name, args.pid_dir)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _one_name_or_all(args: argparse.Namespace) -> None:
    if bool(args.name) == bool(args.all):
        raise UsageError(f"{args.command}: give a NAME or --all (not both)")


# ---- commands ------------------------------------------------------------------------------


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
    from ._group import ServerGroup

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


# Imports the app as uvicorn will (the working directory first on the path)
# and looks the attribute up: a missing file, a syntax error, an exception at
# import time and a missing attribute all show here, before anything stops.
_IMPORTABLE = (
    "import importlib, sys\n"
    "sys.path.insert(0, '')\n"
    "module, _, attr = sys.argv[1].partition(':')\n"
    "try:\n"
    "    obj = importlib.import_module(module)\n"
    "    for part in attr.split('.'):\n"
    "        obj = getattr(obj, part)\n"
    "except BaseException as e:\n"
    "    sys.exit(f'{type(e).__name__}: {e}')\n"
)


def _why_not_restartable(m: ServerManager) -> Optional[str]:
    """What would make a restart fail, checked before the server is stopped:
    the app's module must import from the recorded directory and environment
    (as uvicorn will import it), and the port must be free or this server's."""
    import subprocess

    cwd = m.cwd or os.getcwd()
    if ":" not in m.app_path:
        return f"{m.app_path!r} is not in uvicorn's module:attribute form"
    if not os.path.isdir(cwd):
        return f"its working directory {cwd} does not exist"
    check = subprocess.run(
        [sys.executable, "-c", _IMPORTABLE, m.app_path],
        cwd=cwd,
        env={**os.environ, **m.env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if check.returncode != 0:
        why = (check.stderr.strip().splitlines() or ["it failed"])[-1]
        return f"{m.app_path!r} cannot be imported from {cwd}: {why}"
    st = m.status()
    # Its supervisor holds the socket too (and hands it to the next run).
    ours = {p for p in [st.pid, *st.workers, st.supervisor_pid] if p is not None}
    others = [h for h in m.port_holders() if h.pid not in ours]
    if others:
        h = others[0]
        owner = f", the managed server {h.server!r}" if h.server else ""
        return f"port {m.port} is held by pid {h.pid} ({h.name}, user {h.user}){owner}"
    return None


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
    why = _why_not_restartable(m)
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
    from ._group import ServerGroup

    # Every server is checked before any is stopped: one broken app must not
    # take the others down with it.
    _, running = _running_managers(args)
    problems = [f"{m.name}: {why}" for m in running if (why := _why_not_restartable(m))]
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
    out.flush()
    if args.follow:
        try:
            follow(sources, out)
        except KeyboardInterrupt:
            return EXIT_OK
    return EXIT_OK


def cmd_diagnose(args: argparse.Namespace, out: TextIO) -> int:
    m = _recorded(args, args.name)
    if m is None:
        raise ServerManagerError(f"{args.name}: its record names no app to diagnose")
    import json

    out.write(json.dumps(m.diagnose(), indent=2, default=str) + "\n")
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
    from . import _core

    return _core.forget_leftovers(args.pid_dir, name)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    from ._foreground import run_foreground, run_supervised

    m = _manager_from_args(args)
    if m._core.supervised:
        return run_supervised(m, args.redirect_output, args.force, out)
    return run_foreground(m, args.redirect_output, args.force, out)


def _systemd_quote(word: str, dollars: bool = True) -> str:
    """One word as systemd reads it in a unit file (not as a shell would):
    specifiers (%) and, in ExecStart=, variables ($) doubled; backslashes and
    quotes escaped; quoted when it holds anything but plain characters."""
    text = word.replace("%", "%%")
    if dollars:
        text = text.replace("$", "$$")
    if text and all(c.isalnum() or c in "-_./:=@+," for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_systemd_unit(args: argparse.Namespace, out: TextIO) -> int:
    name = _name_of(args)
    m = _manager_from_args(args)  # validates every argument
    import pwd

    user = args.user or pwd.getpwuid(os.getuid()).pw_name
    cwd = os.path.abspath(args.cwd or os.getcwd())
    # Records and logs in directories systemd creates for the service, owned
    # by its user, unless given: the user's home may not be writable (or exist).
    directories = ""
    if args.pid_dir:
        pid_dir = os.path.abspath(args.pid_dir)
    else:
        pid_dir = f"/run/upsonic-{name}"
        directories += f"RuntimeDirectory=upsonic-{name}\n"
    if args.log_dir:
        log_dir = os.path.join(cwd, args.log_dir)
    else:
        log_dir = f"/var/log/upsonic-{name}"
        directories += f"LogsDirectory=upsonic-{name}\n"
    # Every option given reaches `run`, spelled as `run` spells it (derived
    # from the parser, as `export systemd` does for a file's servers).
    from types import SimpleNamespace

    kw = {
        k: v
        for k, v in _manager_kwargs(args).items()
        if k not in ("pid_dir", "log_dir", "cwd", "env")  # the unit's own lines
    }
    spec = SimpleNamespace(
        name=name,
        origin={},
        kwargs={"app_path": args.app, "host": args.host, "port": args.port, **kw},
    )
    run = [sys.executable, "-m", "upsonic_server_manager", "--pid-dir", pid_dir, "run"]
    extra = ["--log-dir", log_dir, "--redirect-output"] + (["--force"] if args.force else [])
    run += _cli_sets.run_arguments(spec, extra)
    env_lines = "".join(
        f"Environment={_systemd_quote(f'{k}={v}', dollars=False)}\n"
        for k, v in [("PYTHONUNBUFFERED", "1")] + args.env
    )
    exec_start = " ".join(_systemd_quote(a) for a in run)
    # `run` reloads on SIGHUP when the server holds its socket (as a
    # supervised or port-0 server does by default).
    reload_line = "ExecReload=/bin/kill -HUP $MAINPID\n" if m.hold_socket else ""
    unit = f"""\
# systemd unit for upsonic server {name!r}.
# Install it with:
#   sudo tee /etc/systemd/system/upsonic-{name}.service < this-file
#   sudo systemctl daemon-reload && sudo systemctl enable --now upsonic-{name}
# `run` reports READY=1 once the server listens and stops it on SIGTERM.
[Unit]
Description=upsonic server {name} ({args.app} on {fmt_address(args.host, args.port)})
After=network.target

[Service]
Type=notify
NotifyAccess=main
User={user}
WorkingDirectory={cwd.replace("%", "%%")}
{directories}{env_lines}ExecStart={exec_start}
{reload_line}Restart=on-failure
RestartSec=2s
KillMode=mixed
TimeoutStopSec={int(args.stop_timeout) + 10}

[Install]
WantedBy=multi-user.target
"""
    out.write(unit)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    import socket
    import tempfile
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="upsonic-demo-") as tmp:
        m = ServerManager(
            "upsonic_server_manager.demo_app:app",
            "127.0.0.1",
            port,
            "demo",
            pid_dir=tmp,
            log_dir=os.path.join(tmp, "logs"),
        )
        try:
            took = run_with_spinner(
                "starting demo", lambda: m.start(redirect_output=True), out, True
            )
            import importlib.util

            kind = "FastAPI" if importlib.util.find_spec("fastapi") else "plain ASGI"
            out.write(
                f"1. started the bundled demo app ({kind}) on http://127.0.0.1:{port} "
                f"(pid {m.status().pid}) in {took * 1000:.0f} ms\n"
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as r:
                body = r.read().decode()
                out.write(f"2. GET /hello -> {r.status} {body}\n")
            out.write("3. status:\n")
            st = m.status()
            out.write(render_table([status_row(st, st.cpu_percent)], columns(None)) + "\n")
        finally:
            t0 = time.monotonic()
            m.stop()
        free = not m.port_holders()
        out.write(
            f"4. stopped it in {(time.monotonic() - t0) * 1000:.0f} ms; "
            f"port {port} is {'free' if free else 'STILL HELD'}, running={m.is_running()}\n"
        )
        return EXIT_OK if free else EXIT_ERROR


COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "start": cmd_start,
    "stop": cmd_stop,
    "restart": cmd_restart,
    "reload": cmd_reload,
    "status": cmd_status,
    "logs": cmd_logs,
    "diagnose": cmd_diagnose,
    "forget": cmd_forget,
    "run": cmd_run,
    "systemd-unit": cmd_systemd_unit,
    "demo": cmd_demo,
    "warm": _cli_warm.cmd_warm,
}


# The commands that start a server take uvicorn's own arguments after `--`
# (ServerManager's uvicorn_args; given, they replace the defaults).
_TAKE_UVICORN_ARGS = ("start", "run", "systemd-unit")


def _parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    rest: Optional[list[str]] = None
    if "--" in words:
        at = words.index("--")
        words, rest = words[:at], words[at + 1 :]
    args = build_parser().parse_args(words)
    if rest is not None:
        if args.command not in _TAKE_UVICORN_ARGS:
            raise UsageError(
                f"{args.command} takes no uvicorn arguments after --; "
                f"only {', '.join(_TAKE_UVICORN_ARGS)} do"
            )
        args.uvicorn_args = rest
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    out = sys.stdout
    args: Optional[argparse.Namespace] = None
    try:
        args = _parse(argv)
        if args.command in ("start", "restart", "reload"):
            # SIGTERM (`timeout`, `kill`, a CI runner) while a server starts
            # cleans up as Ctrl-C does, instead of leaving it coming up.
            signal.signal(signal.SIGTERM, _terminated)
        return (_cli_sets.dispatch(args) or COMMANDS[args.command])(args, out)
    except UsageError as e:
        if e.usage:
            print(e.usage, file=sys.stderr)
        print(f"upsonic-server: error: {for_the_shell(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except UnknownName as e:
        print(f"upsonic-server: {e}", file=sys.stderr)
        return EXIT_ERROR
    except PortInUseError as e:
        print(f"upsonic-server: {for_the_shell(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except RuntimeError as e:
        print(f"upsonic-server: {for_the_shell(str(e))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt as e:
        command = getattr(args, "command", None)
        word = "terminated" if isinstance(e, _Terminated) else "interrupted"
        if command in ("start", "restart"):
            before = " (the running one had been stopped first)" if command == "restart" else ""
            print(
                f"\nupsonic-server: {word}; the half-started server was stopped{before}",
                file=sys.stderr,
            )
        if isinstance(e, _Terminated):
            # End as SIGTERM would have ended us (the shell sees 143).
            sys.stderr.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)
        return EXIT_INTERRUPTED


class _Terminated(KeyboardInterrupt):
    """SIGTERM while a server starts: handled as Ctrl-C is."""


def _terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one clean-up is enough
    raise _Terminated


if __name__ == "__main__":
    sys.exit(main())
